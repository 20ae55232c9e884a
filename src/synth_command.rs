//! `herd synth --config FILE [--set key=value]`: rejection sampling (Llama 3 §4.2.2) through
//! `synth::rejection::run`; prints the summary as JSON.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use synth::RejectionConfig;
use training::config::load_config;

/// Arguments of `herd synth`.
#[derive(Debug, Args)]
pub struct SynthArgs {
    /// The TOML config (configs/synth-tiny.toml shows every key).
    #[arg(long)]
    config: PathBuf,
    /// Override a config key before parsing, e.g. --set samples=16 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
}

/// Runs `herd synth`.
pub fn run_synth(arguments: &SynthArgs) -> Result<ExitCode> {
    let (config, _) = load_config::<RejectionConfig>(&arguments.config, &arguments.overrides)?;
    let summary = synth::rejection::run(&config)?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(ExitCode::SUCCESS)
}
