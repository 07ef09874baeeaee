//! `sidekey`: short-lived session tokens in place of real LLM API keys.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use sidekey::config::{self, Overrides};
use sidekey::telemetry;

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
    /// Print the OpenAPI document the service serves at /openapi.json.
    Openapi,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Openapi => {
            println!("{}", sidekey_adapters::http::openapi_json());
            Ok(())
        }
        Command::Serve { config, overrides } => {
            let config = config::load(config.as_ref(), &overrides.with_environment())?;
            telemetry::init_logging(&config.log)?;
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(async {
                let metrics = telemetry::install_metrics();
                sidekey::serve(&config, Some(metrics), sidekey::shutdown_signal()).await
            })
        }
    }
}
