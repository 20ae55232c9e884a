//! `herd`: the command line. A thin dispatcher — argument parsing and printing only; the work is in
//! the library crates.

#![expect(
    clippy::doc_markdown,
    reason = "doc comments here are --help text, which clap shows without Markdown"
)]

mod dpo;
mod label;
mod reward;
mod synth_command;

use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use candle_core::{DType, Device};
use clap::{Args, Parser, Subcommand, ValueEnum};
use datasets::encode::{EncodeOptions, EncodedRecord, encode_record};
use datasets::jsonl::JsonlLines;
use datasets::mask::TrainOn;
use datasets::records::Record;
use datasets::render::{Renderer, render_text};
use datasets::tokenizer::{Llama3Tokenizer, import_tiktoken, train_bpe};
use datasets::{stats, validate};
use synth::{GenerateOptions, Policy, generate_file};
use training::config::load_config;
use training::{average_checkpoints, average_into_directory};

#[derive(Debug, Parser)]
#[command(
    name = "herd",
    version,
    about = "Post-training and alignment engine (the Llama 3.1 recipe)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check, render and measure conversation and preference files.
    #[command(subcommand)]
    Data(DataCommand),
    /// Make tokenizers: import Meta's tokenizer.model, or train a small BPE.
    #[command(subcommand)]
    Tokenizer(TokenizerCommand),
    /// Causal-LM training from scratch or continued (re-running resumes from the newest checkpoint).
    Pretrain(StageArgs),
    /// Supervised fine-tuning on conversations (re-running resumes from the newest checkpoint).
    Sft(StageArgs),
    /// One round of the Llama 3 recipe: reward model, rejection sampling, SFT, DPO, averaging,
    /// export, and a report (re-running resumes).
    Round(StageArgs),
    /// The whole recipe from nothing on a task with checkable answers (multi-digit addition):
    /// tokenizer, pretraining, SFT, a round; prints held-out accuracy after every stage.
    Demo {
        /// Where everything goes.
        #[arg(long, default_value = "runs/demo")]
        out: PathBuf,
        /// The short demo the end-to-end test runs (every stage, tiny sizes, about a minute).
        #[arg(long)]
        short: bool,
        /// Where every stage runs and the dtype it computes in.
        #[command(flatten)]
        placement: PlacementArgs,
    },
    /// Reward models: train on preference pairs, evaluate, score dialogues.
    #[command(subcommand)]
    Reward(reward::RewardCommand),
    /// Direct preference optimisation on preference pairs, reference log-probs precomputed
    /// (re-running resumes; `herd dpo precompute` only fills the reference caches).
    Dpo(dpo::DpoArgs),
    /// Generate one completion per JSONL line ({"messages"}, {"text"} or {"ids"}).
    Generate {
        /// HF checkpoint directory (its tokenizer.json is used when present).
        #[arg(long)]
        model: PathBuf,
        /// JSONL prompts (`-` for standard input).
        #[arg(long)]
        input: String,
        /// Where to write one JSON line per input line.
        #[arg(long)]
        output: PathBuf,
        #[command(flatten)]
        sampling: SamplingArgs,
        /// Prompts generated together.
        #[arg(long, default_value_t = 8)]
        batch_size: usize,
        #[command(flatten)]
        placement: PlacementArgs,
    },
    /// Chat with a model in the terminal (/reset starts over, /exit quits).
    Chat {
        /// HF checkpoint directory with its tokenizer.json.
        #[arg(long)]
        model: PathBuf,
        /// A system message for every conversation.
        #[arg(long)]
        system: Option<String>,
        #[command(flatten)]
        sampling: SamplingArgs,
        #[command(flatten)]
        placement: PlacementArgs,
    },
    /// Rejection sampling: K samples per prompt, scored, the best kept (re-running resumes).
    Synth(synth_command::SynthArgs),
    /// Average checkpoints (uniformly, or with --weights) into one model.safetensors.
    Average {
        /// Where to write the averaged weights: a directory (model.safetensors inside) or a file.
        #[arg(long)]
        out: PathBuf,
        /// Weights, one per checkpoint, normalised to sum to 1.
        #[arg(long, value_delimiter = ',')]
        weights: Option<Vec<f64>>,
        /// Checkpoints: safetensors files or directories holding them.
        #[arg(required = true, num_args = 2..)]
        checkpoints: Vec<PathBuf>,
    },
    /// The labeling app: serve it, create accounts, import items, export preferences.
    #[command(subcommand)]
    Label(label::LabelCommand),
    /// Export an HF checkpoint directory (weights, config, tokenizer with the chat template).
    Export {
        /// The checkpoint directory, e.g. a run's final/.
        #[arg(long)]
        checkpoint: PathBuf,
        /// The output directory.
        #[arg(long)]
        out: PathBuf,
        /// Weights dtype.
        #[arg(long, value_enum, default_value_t = ExportDtype::Bf16)]
        dtype: ExportDtype,
    },
}

#[derive(Debug, Args)]
struct StageArgs {
    /// The TOML config.
    #[arg(long)]
    config: PathBuf,
    /// Override a config key before parsing, e.g. --set training.steps=10 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
}

/// `--device` and `--dtype` of every command that runs a model without training it.
#[derive(Debug, Clone, Copy, Args)]
pub(crate) struct PlacementArgs {
    /// Where the model runs: auto (a CUDA GPU when herd is built with it and one is present,
    /// else the CPU), cpu or cuda.
    #[arg(long, value_enum, default_value_t = DeviceFlag::Auto)]
    device: DeviceFlag,
    /// The dtype the weights are kept and computed in (bf16 halves the memory; logits stay f32).
    #[arg(long, value_enum, default_value_t = DtypeFlag::F32)]
    dtype: DtypeFlag,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DeviceFlag {
    Auto,
    Cpu,
    Cuda,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DtypeFlag {
    F32,
    Bf16,
}

impl PlacementArgs {
    fn placement(self) -> training::Placement {
        training::Placement {
            device: match self.device {
                DeviceFlag::Auto => training::DeviceChoice::Auto,
                DeviceFlag::Cpu => training::DeviceChoice::Cpu,
                DeviceFlag::Cuda => training::DeviceChoice::Cuda,
            },
            dtype: match self.dtype {
                DtypeFlag::F32 => training::ComputeDtype::F32,
                DtypeFlag::Bf16 => training::ComputeDtype::Bf16,
            },
        }
    }

    /// The device and dtype these flags name; `--device cuda` on a CPU-only build is an error
    /// naming the flag.
    pub(crate) fn open(self) -> Result<(Device, DType)> {
        Ok(self.placement().open("--device")?)
    }

    /// A policy (model + tokenizer) from `model`, placed as the flags say.
    fn load_policy(self, model: &Path) -> Result<Policy> {
        let (device, dtype) = self.open()?;
        Policy::load_on(model, &device, dtype)
            .with_context(|| format!("loading {}", model.display()))
    }
}

#[derive(Debug, Args)]
struct SamplingArgs {
    /// 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    /// Nucleus sampling threshold.
    #[arg(long)]
    top_p: Option<f64>,
    /// Sample among the k most likely tokens.
    #[arg(long)]
    top_k: Option<usize>,
    /// Sampling seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Upper bound on each generation.
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
}

impl SamplingArgs {
    fn options(&self, batch_size: usize) -> GenerateOptions {
        GenerateOptions {
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            seed: self.seed,
            max_new_tokens: self.max_new_tokens,
            batch_size,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ExportDtype {
    F32,
    Bf16,
}

#[derive(Debug, Subcommand)]
enum DataCommand {
    /// Report every problem of JSONL files, one per line as FILE:LINE: FIELD: MESSAGE; exit 1 if any.
    Validate {
        /// JSONL files (`-` for standard input).
        #[arg(required = true)]
        files: Vec<String>,
        /// Also render with this tokenizer.json, checking lengths.
        #[arg(long)]
        tokenizer: Option<PathBuf>,
        /// Refuse sequences longer than this many tokens (needs --tokenizer).
        #[arg(long, requires = "tokenizer")]
        max_length: Option<usize>,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Render records as Llama 3.1 text, or with --ids as token ids and loss masks (JSONL).
    Render {
        /// JSONL file, or `-` for standard input.
        #[arg(default_value = "-")]
        file: String,
        /// The tokenizer.json (needed for --ids).
        #[arg(long)]
        tokenizer: Option<PathBuf>,
        /// Print one JSON object per record with ids, mask and dpo_mask instead of text.
        #[arg(long, requires = "tokenizer")]
        ids: bool,
        /// End conversations with an open assistant header.
        #[arg(long)]
        generation_prompt: bool,
        #[command(flatten)]
        encoding: EncodingArgs,
        /// Skip bad lines (reported on stderr with a count) instead of stopping at the first.
        #[arg(long)]
        skip_invalid: bool,
    },
    /// Counts, token-length histogram, and what a maximum length would cut.
    Stats {
        /// JSONL file, or `-` for standard input.
        file: String,
        /// The tokenizer.json.
        #[arg(long)]
        tokenizer: PathBuf,
        /// Report how many sequences these limits would cut (repeatable).
        #[arg(long = "max-length")]
        max_lengths: Vec<usize>,
        /// Which assistant messages count as trained.
        #[arg(long, value_enum, default_value_t = TrainOnArg::LastTurn)]
        train_on: TrainOnArg,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
struct EncodingArgs {
    /// Which assistant messages of a conversation the masks cover.
    #[arg(long, value_enum, default_value_t = TrainOnArg::LastTurn)]
    train_on: TrainOnArg,
    /// Refuse sequences longer than this many tokens.
    #[arg(long)]
    max_length: Option<usize>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum TrainOnArg {
    /// The assistant messages after the last user message.
    LastTurn,
    /// Every assistant message.
    AllTurns,
}

impl From<TrainOnArg> for TrainOn {
    fn from(argument: TrainOnArg) -> TrainOn {
        match argument {
            TrainOnArg::LastTurn => TrainOn::LastAssistantTurn,
            TrainOnArg::AllTurns => TrainOn::AllAssistantTurns,
        }
    }
}

#[derive(Debug, Subcommand)]
enum TokenizerCommand {
    /// Convert Meta's tiktoken tokenizer.model into an equivalent HF tokenizer.json.
    Import {
        /// Meta's tokenizer.model.
        tokenizer_model: PathBuf,
        /// Where to write tokenizer.json.
        #[arg(long)]
        out: PathBuf,
    },
    /// Train a byte-level BPE with the Llama 3 pre-tokenizer and special tokens.
    Train {
        /// Text files to train on.
        #[arg(long, required = true, num_args = 1..)]
        corpus: Vec<PathBuf>,
        /// Base vocabulary size (the 256 special tokens come on top).
        #[arg(long)]
        vocab_size: usize,
        /// Minimum pair frequency for a merge.
        #[arg(long, default_value_t = 2)]
        min_frequency: u64,
        /// Where to write tokenizer.json.
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

#[expect(
    clippy::too_many_lines,
    reason = "the dispatcher: one short arm per command, read as a table"
)]
fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Data(command) => run_data(command),
        Command::Label(command) => label::run_label(command),
        Command::Synth(arguments) => synth_command::run_synth(&arguments),
        Command::Tokenizer(command) => run_tokenizer(command),
        Command::Pretrain(stage) => {
            let (config, resolved) =
                load_config::<pretrain::PretrainConfig>(&stage.config, &stage.overrides)?;
            let summary = pretrain::run(&config, &resolved)?;
            println!("{}", serde_json::to_string_pretty(&summary)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Round(stage) => {
            let (config, _) = load_config::<recipe::RoundConfig>(&stage.config, &stage.overrides)?;
            let summary = recipe::round::run(&config)?;
            println!("{}", std::fs::read_to_string(&summary.report)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo {
            out,
            short,
            placement,
        } => {
            let mut settings = if short {
                recipe::DemoSettings::short(out)
            } else {
                recipe::DemoSettings::full(out)
            };
            settings.placement = placement.placement();
            let summary = recipe::demo::run(&settings)?;
            println!(
                "\nHeld-out accuracy after each stage ({:.0} s in all):\n\n{}",
                summary.seconds, summary.table
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Sft(stage) => {
            let (config, resolved) =
                load_config::<sft::SftConfig>(&stage.config, &stage.overrides)?;
            let summary = sft::run(&config, &resolved)?;
            println!("{}", serde_json::to_string_pretty(&summary)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Dpo(args) => dpo::run_dpo(args),
        Command::Reward(command) => reward::run_reward(command),
        Command::Generate {
            model,
            input,
            output,
            sampling,
            batch_size,
            placement,
        } => {
            let policy = placement.load_policy(&model)?;
            let file = std::fs::File::create(&output)
                .with_context(|| format!("creating {}", output.display()))?;
            let mut writer = BufWriter::new(file);
            let written =
                generate_file(&policy, &input, &mut writer, &sampling.options(batch_size))?;
            eprintln!("wrote {written} generations to {}", output.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Chat {
            model,
            system,
            sampling,
            placement,
        } => {
            let policy = placement.load_policy(&model)?;
            let stdin = io::stdin();
            let stdout = io::stdout();
            synth::chat::chat(
                &policy,
                system.as_deref(),
                &sampling.options(1),
                &mut stdin.lock(),
                &mut stdout.lock(),
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Average {
            out,
            weights,
            checkpoints,
        } => {
            // A directory gets the first input's config and tokenizer too, so it loads as a
            // checkpoint; a .safetensors path gets the weights alone.
            let file = if out
                .extension()
                .is_some_and(|extension| extension == "safetensors")
            {
                average_checkpoints(&checkpoints, weights.as_deref(), &out)?;
                out
            } else {
                average_into_directory(&checkpoints, weights.as_deref(), &out)?;
                out.join("model.safetensors")
            };
            eprintln!(
                "wrote the average of {} checkpoints to {}",
                checkpoints.len(),
                file.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Export {
            checkpoint,
            out,
            dtype,
        } => {
            let dtype = match dtype {
                ExportDtype::F32 => DType::F32,
                ExportDtype::Bf16 => DType::BF16,
            };
            let summary = training::export(&checkpoint, &out, dtype)?;
            println!("{}", serde_json::to_string_pretty(&summary)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn load_tokenizer(path: &Path) -> Result<Llama3Tokenizer> {
    Llama3Tokenizer::from_file(path)
        .with_context(|| format!("loading tokenizer {}", path.display()))
}

fn run_data(command: DataCommand) -> Result<ExitCode> {
    match command {
        DataCommand::Validate {
            files,
            tokenizer,
            max_length,
            json,
        } => {
            let tokenizer = tokenizer.as_deref().map(load_tokenizer).transpose()?;
            let renderer = tokenizer.as_ref().map(Renderer::new).transpose()?;
            let options = EncodeOptions {
                max_length,
                ..EncodeOptions::default()
            };
            let mut failed = false;
            let stdout = io::stdout();
            let mut out = stdout.lock();
            for file in files {
                let report =
                    validate::validate(JsonlLines::open(&file)?, renderer.as_ref(), options);
                for problem in &report.problems {
                    writeln!(out, "{problem}")?;
                }
                if json {
                    let mut summary = report.summary_json();
                    summary["file"] = file.clone().into();
                    writeln!(out, "{summary}")?;
                } else {
                    eprintln!(
                        "{file}: {} lines, {} conversations, {} preferences, {} invalid lines ({} problems)",
                        report.lines,
                        report.conversations,
                        report.preferences,
                        report.invalid_lines(),
                        report.problems.len()
                    );
                }
                failed |= !report.problems.is_empty();
            }
            Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        DataCommand::Render {
            file,
            tokenizer,
            ids,
            generation_prompt,
            encoding,
            skip_invalid,
        } => {
            let tokenizer = tokenizer.as_deref().map(load_tokenizer).transpose()?;
            let renderer = tokenizer.as_ref().map(Renderer::new).transpose()?;
            if encoding.max_length.is_some() && renderer.is_none() {
                bail!("--max-length needs --tokenizer to count tokens");
            }
            let options = EncodeOptions {
                train_on: encoding.train_on.into(),
                generation_prompt,
                max_length: encoding.max_length,
            };
            render(&file, renderer.as_ref(), ids, options, skip_invalid)
        }
        DataCommand::Stats {
            file,
            tokenizer,
            max_lengths,
            train_on,
            json,
        } => {
            let tokenizer = load_tokenizer(&tokenizer)?;
            let renderer = Renderer::new(&tokenizer)?;
            let options = EncodeOptions {
                train_on: train_on.into(),
                ..EncodeOptions::default()
            };
            let stats = stats::compute(JsonlLines::open(&file)?, &renderer, options, &max_lengths);
            if json {
                println!("{}", serde_json::to_string_pretty(&stats)?);
            } else {
                print!("{stats}");
            }
            Ok(if stats.problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

fn render(
    file: &str,
    renderer: Option<&Renderer<'_>>,
    ids: bool,
    options: EncodeOptions,
    skip_invalid: bool,
) -> Result<ExitCode> {
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let (mut written, mut skipped) = (0usize, 0usize);
    for item in JsonlLines::open(file)?.records() {
        let outcome = item
            .map_err(|problems| {
                problems
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .and_then(|(line, record)| {
                render_record(renderer, &record, ids, options)
                    .map_err(|error| format!("{file}:{line}: {error}"))
            });
        match outcome {
            Ok(text) => {
                out.write_all(text.as_bytes())?;
                out.write_all(b"\n")?;
                written += 1;
            }
            Err(reason) if skip_invalid => {
                eprintln!("skipped {reason}");
                skipped += 1;
            }
            Err(reason) => {
                out.flush()?;
                bail!(
                    "{reason}\n(rendered {written} records before it; --skip-invalid skips bad lines)"
                );
            }
        }
    }
    out.flush()?;
    if skipped > 0 {
        eprintln!("rendered {written} records, skipped {skipped} invalid lines");
    }
    Ok(ExitCode::SUCCESS)
}

fn render_record(
    renderer: Option<&Renderer<'_>>,
    record: &Record,
    ids: bool,
    options: EncodeOptions,
) -> Result<String> {
    if ids {
        let renderer = renderer.context("--ids needs --tokenizer")?;
        let encoded = encode_record(renderer, record, options)?;
        return Ok(serde_json::to_string(&encoded_json(&encoded))?);
    }
    if let Some(renderer) = renderer {
        // Check the length limit even when printing text.
        encode_record(renderer, record, options)?;
    }
    Ok(match record {
        Record::Conversation(conversation) => {
            render_text(&conversation.dialogue, options.generation_prompt)
        }
        Record::Preference(preference) => {
            let mut texts = Vec::new();
            for (name, completion) in [
                ("chosen", Some(&preference.chosen)),
                ("rejected", Some(&preference.rejected)),
                ("edited", preference.edited.as_ref()),
            ] {
                if let Some(completion) = completion {
                    let dialogue = preference.full_dialogue(completion).map_err(|problems| {
                        anyhow::anyhow!(datasets::message::join_problems(&problems))
                    })?;
                    texts.push(format!("# {name}\n{}", render_text(&dialogue, false)));
                }
            }
            texts.join("\n")
        }
    })
}

fn encoded_json(encoded: &EncodedRecord) -> serde_json::Value {
    let sequence_json = |sequence: &datasets::encode::EncodedSequence| {
        serde_json::json!({
            "ids": sequence.ids,
            "mask": sequence.mask,
            "dpo_mask": sequence.dpo_mask,
            "length": sequence.len(),
        })
    };
    match encoded {
        EncodedRecord::Conversation(sequence) => sequence_json(sequence),
        EncodedRecord::Preference { .. } => {
            let mut fields = serde_json::Map::new();
            for (name, sequence) in encoded.sequences() {
                fields.insert(name.to_owned(), sequence_json(sequence));
            }
            serde_json::Value::Object(fields)
        }
    }
}

fn run_tokenizer(command: TokenizerCommand) -> Result<ExitCode> {
    let started = Instant::now();
    let (tokenizer, out) = match command {
        TokenizerCommand::Import {
            tokenizer_model,
            out,
        } => {
            let imported = import_tiktoken(&tokenizer_model)
                .with_context(|| format!("importing {}", tokenizer_model.display()))?;
            let tokenizer =
                Llama3Tokenizer::from_tokenizer(imported, tokenizer_model.display().to_string())?;
            (tokenizer, out)
        }
        TokenizerCommand::Train {
            corpus,
            vocab_size,
            min_frequency,
            out,
        } => (train_bpe(&corpus, vocab_size, min_frequency)?, out),
    };
    tokenizer.save(&out)?;
    eprintln!(
        "wrote {} ({} tokens including 256 special; {:.1} s)",
        out.display(),
        tokenizer.vocab_size(),
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}
