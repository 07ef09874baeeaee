//! `sidekey`: short-lived session tokens in place of real LLM API keys.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use sidekey::config::{self, Overrides};
use sidekey::telemetry;
use sidekey_bridge::AnnouncementReason;
use sidekey_domain::SecretRef;

/// Keeps LLM API keys on the server: clients hold short-lived session tokens instead.
#[derive(Debug, Parser)]
#[command(name = "sidekey", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// The enum is parsed once at start-up, so the size of its largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP service.
    Serve {
        /// TOML configuration file (every key optional).
        #[arg(long, env = "SIDEKEY_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Answer secret requests on the event bus (`SIDEKEY_SECRETS=redis://…`) from this machine's keys
    /// (`SIDEKEY_BRIDGE_SOURCE`: env, file:DIR or toml:PATH), authenticated by `SIDEKEY_BRIDGE_SECRET`.
    Bridge {
        /// TOML configuration file (every key optional).
        #[arg(long, env = "SIDEKEY_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        overrides: Overrides,
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
        #[arg(long, env = "SIDEKEY_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Print the OpenAPI document the service serves at /openapi.json.
    Openapi,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Openapi => {
            println!("{}", sidekey_http::openapi_json());
            Ok(())
        }
        Command::Serve { config, overrides } => {
            let config = config::load(config.as_ref(), &overrides.with_environment())?;
            telemetry::init_logging(&config.log)?;
            raise_open_file_limit();
            return_large_allocations_to_the_os();
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(async {
                let metrics = telemetry::install_metrics();
                sidekey::serve(&config, Some(metrics), sidekey::shutdown_signal()).await
            })
        }
        Command::Bridge { config, overrides } => {
            let config = config::load(config.as_ref(), &overrides.with_environment())?;
            telemetry::init_logging(&config.log)?;
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            // The signal handlers are registered inside the runtime, before the bridge starts.
            runtime.block_on(async { sidekey::run_bridge(&config, sidekey::shutdown_signal()).await })
        }
        Command::Announce { secret_key_id, withdrawn, config, overrides } => {
            let config = config::load(config.as_ref(), &overrides.with_environment())?;
            telemetry::init_logging(&config.log)?;
            let secret_ref = SecretRef::parse(&secret_key_id)
                .map_err(|error| anyhow::anyhow!("invalid secret_key_id: {error}"))?;
            let reason = if withdrawn { AnnouncementReason::Withdrawn } else { AnnouncementReason::Rotated };
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(sidekey::announce_rotation(&config, &secret_ref, reason))
        }
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
