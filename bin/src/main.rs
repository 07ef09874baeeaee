//! `sidekey`: short-lived session tokens in place of real LLM API keys.

use std::path::PathBuf;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use sidekey::config::outside::{self, Subcommand as Uses};
use sidekey::config::{self, Config};
use sidekey::telemetry;
use sidekey_domain::SecretRef;

/// Keeps LLM API keys on the server: a chat frontend holds a short-lived session token instead, and
/// sidekey injects the real key into the calls it lets through.
#[derive(Debug, Parser)]
#[command(
    name = "sidekey",
    version,
    about = "Keeps LLM API keys on the server: frontends hold short-lived session tokens instead.",
    long_about = None,
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP service.
    Serve {
        /// TOML configuration file (every key optional; `sidekey config --defaults` prints them all).
        #[arg(long, env = outside::CONFIG_VARIABLE)]
        config: Option<PathBuf>,
    },
    /// Answer secret requests on the event bus (`SIDEKEY_SECRETS=redis://…`) from this machine's keys
    /// (`SIDEKEY_BRIDGE_SOURCE`: env, file:DIR or toml:PATH), authenticated by `SIDEKEY_BRIDGE_SECRET`.
    Bridge {
        /// TOML configuration file (every key optional).
        #[arg(long, env = outside::CONFIG_VARIABLE)]
        config: Option<PathBuf>,
    },
    /// Announce on the event bus that a key was rotated or withdrawn: every instance revokes the
    /// sessions bound to it.
    Announce {
        /// The `secret_key_id` concerned.
        secret_key_id: String,
        /// The key was withdrawn rather than replaced.
        #[arg(long)]
        withdrawn: bool,
        /// TOML configuration file (every key optional).
        #[arg(long, env = outside::CONFIG_VARIABLE)]
        config: Option<PathBuf>,
    },
    /// Print the effective configuration (secrets redacted), or with `--defaults` every key with its
    /// default, as a commented TOML file.
    Config {
        /// TOML configuration file (every key optional).
        #[arg(long, env = outside::CONFIG_VARIABLE)]
        config: Option<PathBuf>,
        /// Print every key with its default instead.
        #[arg(long)]
        defaults: bool,
    },
    /// Print the OpenAPI document the service serves at /openapi.json.
    Openapi,
}

fn main() -> anyhow::Result<()> {
    let command = Cli::command()
        .mut_subcommand("serve", |command| outside::flags(command, Uses::Serve))
        .mut_subcommand("bridge", |command| outside::flags(command, Uses::Bridge))
        .mut_subcommand("announce", |command| outside::flags(command, Uses::Announce))
        .mut_subcommand("config", |command| outside::flags(command, Uses::Serve));
    let matches = command.get_matches();
    let cli = Cli::from_arg_matches(&matches)?;
    let flags = matches.subcommand().map(|(_, matches)| outside::from_flags(matches)).unwrap_or_default();
    let load = |file: Option<PathBuf>| -> anyhow::Result<Config> {
        config::load(
            file.as_deref(),
            std::env::vars(),
            flags.iter().map(|(key, value)| (*key, value.clone())),
        )
    };
    match cli.command {
        Command::Openapi => {
            println!("{}", sidekey_http::openapi_json());
            Ok(())
        }
        Command::Config { defaults: true, .. } => {
            print!("{}", config::print::defaults());
            Ok(())
        }
        Command::Config { config, defaults: false } => {
            print!("{}", config::print::effective(&load(config)?)?);
            Ok(())
        }
        Command::Serve { config } => {
            let config = load(config)?;
            telemetry::init_logging(&config.log)?;
            warn_about_the_environment();
            raise_open_file_limit();
            return_large_allocations_to_the_os();
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(async {
                let metrics = telemetry::install_metrics();
                sidekey::serve(&config, Some(metrics), sidekey::shutdown_signal()).await
            })
        }
        Command::Bridge { config } => {
            let config = load(config)?;
            telemetry::init_logging(&config.log)?;
            warn_about_the_environment();
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            // The signal handlers are registered inside the runtime, before the bridge starts.
            runtime.block_on(async { sidekey::run_bridge(&config, sidekey::shutdown_signal()).await })
        }
        Command::Announce { secret_key_id, withdrawn, config } => {
            let config = load(config)?;
            telemetry::init_logging(&config.log)?;
            warn_about_the_environment();
            let secret_ref = SecretRef::parse(&secret_key_id).context("invalid secret_key_id")?;
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(sidekey::announce_rotation(&config, &secret_ref, withdrawn))
        }
    }
}

/// Logs the `SIDEKEY_*` variables that are set but read by nothing (a typo falls back to a default
/// silently otherwise).
fn warn_about_the_environment() {
    for warning in outside::environment_warnings(std::env::vars()) {
        tracing::warn!("{warning}");
    }
}

/// Takes the hard limit on open files as the soft one, as nginx and Go's runtime do: every keep-alive
/// client holds a descriptor, and the usual soft limit of 1024 would refuse the 1025th.
fn raise_open_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open-file limit"),
        Err(error) => tracing::warn!(%error, "could not raise the open-file limit"),
    }
}

/// Large allocations (the session map's tables, over a megabyte) are mapped from the OS and unmapped
/// when freed. By default glibc raises this threshold after the first such free, and then serves the
/// next tables from its heap, where a table freed by growth stays resident: about 25 MB at a million
/// sessions. A fixed threshold keeps resident memory to what is in use.
fn return_large_allocations_to_the_os() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const THRESHOLD: libc::c_int = 1 << 20;
        // SAFETY: mallopt only sets an allocator parameter, under glibc's own lock; no memory is touched.
        if unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, THRESHOLD) } != 1 {
            tracing::warn!("could not set the allocator's mmap threshold");
        }
    }
}
