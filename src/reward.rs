//! `herd reward …`: argument parsing and printing for the reward model (the work is in `reward/`).

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use candle_core::DType;

use crate::PlacementArgs;
use clap::{Args, Subcommand};
use datasets::render::Renderer;
use datasets::tokenizer::Llama3Tokenizer;
use reward::RewardModel;
use training::config::load_config;

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The TOML config.
    #[arg(long)]
    config: PathBuf,
    /// Override a config key before parsing, e.g. --set training.steps=10 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum RewardCommand {
    /// Train a reward model on preference pairs (re-running resumes from the newest checkpoint).
    Train(TrainArgs),
    /// Pairwise accuracy, mean margin and the reward distribution on a preference file.
    Eval {
        /// A trained reward-model directory (its tokenizer.json is used).
        #[arg(long)]
        model: PathBuf,
        /// Preference JSONL.
        #[arg(long)]
        data: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        placement: PlacementArgs,
    },
    /// Score conversations (last message = assistant) and preferences; writes
    /// {"reward": r, "record": …} or {"reward_chosen", "reward_rejected", "record"} per line.
    Score {
        /// A trained reward-model directory (its tokenizer.json is used).
        #[arg(long)]
        model: PathBuf,
        /// JSONL of conversations and/or preferences.
        #[arg(long)]
        input: PathBuf,
        /// Where to write one JSON line per input line.
        #[arg(long)]
        output: PathBuf,
        #[command(flatten)]
        placement: PlacementArgs,
    },
}

fn load(model: &Path, placement: PlacementArgs) -> Result<(RewardModel, Llama3Tokenizer)> {
    let (device, dtype) = placement.open()?;
    let mut reward_model = RewardModel::load(model, &device)
        .with_context(|| format!("loading {}", model.display()))?;
    if dtype != DType::F32 {
        reward_model.set_compute_dtype(Some(dtype))?;
    }
    let tokenizer = Llama3Tokenizer::from_file(&model.join("tokenizer.json"))?;
    Ok((reward_model, tokenizer))
}

pub fn run_reward(command: RewardCommand) -> Result<ExitCode> {
    match command {
        RewardCommand::Train(arguments) => {
            let (config, resolved) =
                load_config::<reward::RewardConfig>(&arguments.config, &arguments.overrides)?;
            let summary = reward::run(&config, &resolved)?;
            println!("{}", serde_json::to_string_pretty(&summary)?);
        }
        RewardCommand::Eval {
            model,
            data,
            json,
            placement,
        } => {
            let (reward_model, tokenizer) = load(&model, placement)?;
            let renderer = Renderer::new(&tokenizer)?;
            let evaluation = reward::eval::evaluate_file(&reward_model, &renderer, &data)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&evaluation)?);
            } else {
                print!("{}", evaluation.table());
            }
        }
        RewardCommand::Score {
            model,
            input,
            output,
            placement,
        } => {
            let (reward_model, tokenizer) = load(&model, placement)?;
            let renderer = Renderer::new(&tokenizer)?;
            let file = std::fs::File::create(&output)
                .with_context(|| format!("creating {}", output.display()))?;
            let mut writer = BufWriter::new(file);
            let written = reward::eval::score_file(&reward_model, &renderer, &input, &mut writer)?;
            writer
                .flush()
                .with_context(|| format!("writing {}", output.display()))?;
            eprintln!("wrote {written} scored lines to {}", output.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
