//! `herd dpo …`: argument parsing and printing for direct preference optimisation (the work is in
//! `dpo/`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use training::config::load_config;

/// `herd dpo --config FILE [--set k=v]` trains; `herd dpo precompute --config FILE` only fills the
/// reference log-prob caches beside the data.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct DpoArgs {
    #[command(subcommand)]
    command: Option<DpoCommand>,
    /// The TOML config.
    #[arg(long, required = true)]
    config: Option<PathBuf>,
    /// Override a config key before parsing, e.g. --set dpo.beta=0.2 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
}

#[derive(Debug, Subcommand)]
enum DpoCommand {
    /// Score every completion with the reference model and store the log-probs beside the data
    /// (what `herd dpo` does first; cached scores are reused).
    Precompute {
        /// The TOML config.
        #[arg(long)]
        config: PathBuf,
        /// Override a config key before parsing (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
}

/// Runs `herd dpo` or `herd dpo precompute`, printing the summary as JSON.
pub(crate) fn run_dpo(args: DpoArgs) -> Result<ExitCode> {
    match args.command {
        Some(DpoCommand::Precompute { config, overrides }) => {
            let (config, _) = load_config::<::dpo::DpoConfig>(&config, &overrides)?;
            let report = ::dpo::precompute(&config)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        None => {
            let path = args.config.context("--config is required")?;
            let (config, resolved) = load_config::<::dpo::DpoConfig>(&path, &args.overrides)?;
            let summary = ::dpo::run(&config, &resolved)?;
            println!("{}", serde_json::to_string_pretty(&summary)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}
