//! Checkpoints that resume a run exactly: weights, optimizer moments and step counts, the
//! schedule's position, the global step, where the data loader was, the RNG, and the resolved
//! config — everything a fresh process needs to continue as if it had never stopped.
//!
//! Layout (one directory per checkpoint under the run's checkpoint root):
//!
//! ```text
//! <root>/step-00000009/model.safetensors      the VarMap
//!                      optimizer.safetensors  `AdamW` moments, f32
//!                      optimizer.json         `AdamW` step counts, groups, hyper-parameters
//!                      train_state.json       step, schedule step, data position, RNG
//!                      config.toml            the resolved config, verbatim
//! ```
//!
//! Atomicity follows the write-fsync-rename pattern (as Git's lock files use it):
//! everything is written into `<root>/step-N.tmp-<pid>`, each file and the directory are fsynced,
//! the directory is renamed to `step-N`, and the root is fsynced. A rename within one filesystem
//! is atomic, so a SIGKILL or power cut at any instant leaves either no `step-N` or a complete one;
//! [`load_latest`] looks only at complete names. One process writes to a root at a time.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use candle_core::Device;
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainingError};
use crate::optimizer::{AdamW, named_vars};
use crate::rng::Rng;

/// The weights file inside a checkpoint directory (the name HF uses for a single-file model).
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// The JSON file with the step, schedule step, data position and RNG.
pub const TRAIN_STATE_FILE: &str = "train_state.json";
/// The resolved config, verbatim.
pub const CONFIG_FILE: &str = "config.toml";

const DIRECTORY_PREFIX: &str = "step-";
/// Bumped when the layout changes, so an old checkpoint fails loudly instead of half-loading.
const FORMAT_VERSION: u32 = 1;

/// What a stage hands to [`save_checkpoint`]: borrowed live state plus the small serialisable
/// parts.
pub struct Checkpoint<'a> {
    /// Optimizer updates completed.
    pub step: u64,
    /// The step the learning-rate schedule will be asked for next (usually `step`; differs if
    /// the stage skips the schedule on skipped updates).
    pub schedule_step: u64,
    /// The trainable weights.
    pub var_map: &'a VarMap,
    /// The optimizer, whose moments and per-parameter steps are saved.
    pub optimizer: &'a AdamW,
    /// Where the data loader is, in the stage's own terms (e.g. `{"epoch": 1, "index": 96}`).
    pub data_position: serde_json::Value,
    /// The run's RNG, as it is now.
    pub rng: &'a Rng,
    /// The resolved config, saved verbatim so the checkpoint documents how it was made.
    pub config: &'a str,
}

impl std::fmt::Debug for Checkpoint<'_> {
    // VarMap has no Debug; its names are what identify it.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Checkpoint")
            .field("step", &self.step)
            .field("schedule_step", &self.schedule_step)
            .field(
                "var_map",
                &named_vars(self.var_map)
                    .into_iter()
                    .map(|(name, _)| name)
                    .collect::<Vec<_>>(),
            )
            .field("data_position", &self.data_position)
            .field("rng", &self.rng)
            .finish_non_exhaustive()
    }
}

/// The contents of `train_state.json`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrainState {
    format_version: u32,
    step: u64,
    schedule_step: u64,
    data_position: serde_json::Value,
    rng: Rng,
}

/// A checkpoint read back from disk. The small parts are loaded; weights and optimizer state
/// are restored into live objects with [`LoadedCheckpoint::restore`].
#[derive(Debug, Clone)]
pub struct LoadedCheckpoint {
    /// The checkpoint's directory.
    pub directory: PathBuf,
    /// Optimizer updates completed.
    pub step: u64,
    /// The next step to ask the schedule for.
    pub schedule_step: u64,
    /// The stage's data position, as it saved it.
    pub data_position: serde_json::Value,
    /// The RNG, as it was when saved.
    pub rng: Rng,
    /// The resolved config, verbatim.
    pub config: String,
}

/// Writes a checkpoint for `checkpoint.step` under `root` atomically, then deletes all but the
/// newest `keep_last` checkpoints. Returns the checkpoint's directory.
pub fn save_checkpoint(
    root: &Path,
    checkpoint: &Checkpoint<'_>,
    keep_last: usize,
) -> Result<PathBuf> {
    if keep_last == 0 {
        return Err(TrainingError::InvalidValue {
            field: "keep_last",
            value: "0".to_owned(),
            reason: "must keep at least the checkpoint just written",
        });
    }
    fs::create_dir_all(root).map_err(TrainingError::io(root))?;
    remove_leftovers(root)?;
    let name = format!("{DIRECTORY_PREFIX}{:08}", checkpoint.step);
    let final_directory = root.join(&name);
    let temporary = root.join(format!("{name}.tmp-{}", std::process::id()));
    if temporary.exists() {
        fs::remove_dir_all(&temporary).map_err(TrainingError::io(&temporary))?;
    }
    fs::create_dir(&temporary).map_err(TrainingError::io(&temporary))?;

    let weights = temporary.join(WEIGHTS_FILE);
    checkpoint
        .var_map
        .save(&weights)
        .map_err(TrainingError::tensor(format!(
            "writing {}",
            weights.display()
        )))?;
    checkpoint.optimizer.save(&temporary)?;
    let state = TrainState {
        format_version: FORMAT_VERSION,
        step: checkpoint.step,
        schedule_step: checkpoint.schedule_step,
        data_position: checkpoint.data_position.clone(),
        rng: checkpoint.rng.clone(),
    };
    let state_path = temporary.join(TRAIN_STATE_FILE);
    let json = serde_json::to_vec_pretty(&state).map_err(TrainingError::json(&state_path))?;
    fs::write(&state_path, json).map_err(TrainingError::io(&state_path))?;
    let config_path = temporary.join(CONFIG_FILE);
    fs::write(&config_path, checkpoint.config).map_err(TrainingError::io(&config_path))?;

    for entry in fs::read_dir(&temporary).map_err(TrainingError::io(&temporary))? {
        let path = entry.map_err(TrainingError::io(&temporary))?.path();
        sync(&path)?;
    }
    sync(&temporary)?;

    if final_directory.exists() {
        // Saving a step twice (a resume that saves at the step it resumed from). Renaming over
        // a non-empty directory is not possible, so the old one is moved aside first; a crash
        // in between loses this one step's checkpoint, never leaves a half one.
        let aside = root.join(format!("{name}.old-{}", std::process::id()));
        fs::rename(&final_directory, &aside).map_err(TrainingError::io(&final_directory))?;
        fs::rename(&temporary, &final_directory).map_err(TrainingError::io(&temporary))?;
        fs::remove_dir_all(&aside).map_err(TrainingError::io(&aside))?;
    } else {
        fs::rename(&temporary, &final_directory).map_err(TrainingError::io(&temporary))?;
    }
    sync(root)?;

    let checkpoints = list_checkpoints(root)?;
    let excess = checkpoints.len().saturating_sub(keep_last);
    for (_, directory) in checkpoints.into_iter().take(excess) {
        // Renamed out of the `step-N` namespace first, so a crash mid-delete cannot leave a
        // half-deleted directory that looks like a checkpoint.
        let doomed = directory.with_extension(format!("deleting-{}", std::process::id()));
        fs::rename(&directory, &doomed).map_err(TrainingError::io(&directory))?;
        fs::remove_dir_all(&doomed).map_err(TrainingError::io(&doomed))?;
    }
    Ok(final_directory)
}

/// The complete checkpoints under `root`, oldest first, as (step, directory). A missing root has
/// none.
pub fn list_checkpoints(root: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let entries = match fs::read_dir(root) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => {
            return Err(TrainingError::Io {
                path: root.to_owned(),
                source: error,
            });
        }
    };
    let mut checkpoints = Vec::new();
    for entry in entries {
        let entry = entry.map_err(TrainingError::io(root))?;
        let file_name = entry.file_name();
        let Some(step) = file_name
            .to_str()
            .and_then(|name| name.strip_prefix(DIRECTORY_PREFIX))
            .filter(|digits| !digits.is_empty() && digits.bytes().all(|byte| byte.is_ascii_digit()))
            .and_then(|digits| digits.parse::<u64>().ok())
        else {
            continue;
        };
        checkpoints.push((step, entry.path()));
    }
    checkpoints.sort();
    Ok(checkpoints)
}

/// The newest complete checkpoint under `root`, or `None` for a fresh run.
pub fn load_latest(root: &Path) -> Result<Option<LoadedCheckpoint>> {
    match list_checkpoints(root)?.pop() {
        Some((_, directory)) => LoadedCheckpoint::load(&directory).map(Some),
        None => Ok(None),
    }
}

impl LoadedCheckpoint {
    /// Reads the small parts of the checkpoint in `directory`.
    pub fn load(directory: &Path) -> Result<Self> {
        let state_path = directory.join(TRAIN_STATE_FILE);
        let json = fs::read(&state_path).map_err(TrainingError::io(&state_path))?;
        let state: TrainState =
            serde_json::from_slice(&json).map_err(TrainingError::json(&state_path))?;
        if state.format_version != FORMAT_VERSION {
            return Err(TrainingError::IncompatibleState {
                path: state_path,
                reason: format!(
                    "format_version {} but this build reads {FORMAT_VERSION}",
                    state.format_version
                ),
            });
        }
        let config_path = directory.join(CONFIG_FILE);
        let config = fs::read_to_string(&config_path).map_err(TrainingError::io(&config_path))?;
        Ok(Self {
            directory: directory.to_owned(),
            step: state.step,
            schedule_step: state.schedule_step,
            data_position: state.data_position,
            rng: state.rng,
            config,
        })
    }

    /// Overwrites the weights in `var_map` and the state of `optimizer` with the checkpoint's.
    pub fn restore(&self, var_map: &VarMap, optimizer: &mut AdamW) -> Result<()> {
        load_weights(var_map, &self.directory.join(WEIGHTS_FILE))?;
        optimizer.load(&self.directory)
    }
}

/// Sets every variable of `var_map` from the safetensors file at `path`. The file must hold
/// exactly the map's tensors with the same shapes and dtypes; anything else is an error naming
/// the tensor (unlike `VarMap::load`, which ignores extra tensors and reports no name).
pub fn load_weights(var_map: &VarMap, path: &Path) -> Result<()> {
    let mut tensors = candle_core::safetensors::load(path, &Device::Cpu)
        .map_err(TrainingError::tensor(format!("reading {}", path.display())))?;
    for (name, var) in named_vars(var_map) {
        let tensor = tensors
            .remove(&name)
            .ok_or_else(|| TrainingError::MissingTensor {
                path: path.to_owned(),
                tensor: name.clone(),
            })?;
        if tensor.dims() != var.dims() || tensor.dtype() != var.dtype() {
            return Err(TrainingError::TensorMismatch {
                path: path.to_owned(),
                tensor: name,
                reason: format!(
                    "file has {:?} {:?}, model has {:?} {:?}",
                    tensor.dims(),
                    tensor.dtype(),
                    var.dims(),
                    var.dtype()
                ),
            });
        }
        tensor
            .to_device(var.device())
            .and_then(|tensor| var.set(&tensor))
            .map_err(TrainingError::tensor(format!(
                "setting {name} from {}",
                path.display()
            )))?;
    }
    if let Some(extra) = tensors.keys().min() {
        return Err(TrainingError::TensorMismatch {
            path: path.to_owned(),
            tensor: extra.clone(),
            reason: "in the file but not in the model".to_owned(),
        });
    }
    Ok(())
}

/// Removes `step-N.tmp-*` and `step-N.*-<pid>` directories left by a killed run.
fn remove_leftovers(root: &Path) -> Result<()> {
    for entry in fs::read_dir(root).map_err(TrainingError::io(root))? {
        let entry = entry.map_err(TrainingError::io(root))?;
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str() else {
            continue;
        };
        let leftover = name.starts_with(DIRECTORY_PREFIX)
            && [".tmp-", ".old-", ".deleting-"]
                .iter()
                .any(|marker| name.contains(marker));
        if leftover {
            fs::remove_dir_all(entry.path()).map_err(TrainingError::io(entry.path()))?;
        }
    }
    Ok(())
}

/// fsync a file or directory, so its contents (or entries) survive a power cut.
fn sync(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|file| file.sync_all())
        .map_err(TrainingError::io(path))
}

#[cfg(test)]
mod tests {
    use candle_core::DType;
    use candle_nn::VarBuilder;

    use super::*;
    use crate::optimizer::{AdamWConfig, llama_weight_decay};

    fn model() -> (VarMap, AdamW) {
        let var_map = VarMap::new();
        let builder = VarBuilder::from_varmap(&var_map, DType::F32, &Device::Cpu);
        candle_nn::linear(2, 2, builder.pp("proj")).unwrap();
        let optimizer =
            AdamW::from_var_map(&var_map, AdamWConfig::default(), llama_weight_decay(false))
                .unwrap();
        (var_map, optimizer)
    }

    fn save(root: &Path, step: u64, var_map: &VarMap, optimizer: &AdamW) -> PathBuf {
        let checkpoint = Checkpoint {
            step,
            schedule_step: step,
            var_map,
            optimizer,
            data_position: serde_json::json!({"index": step * 4}),
            rng: &Rng::from_seed(step),
            config: "seed = 1\n",
        };
        save_checkpoint(root, &checkpoint, 2).unwrap()
    }

    /// A directory left half-written by a kill is neither loaded nor kept.
    #[test]
    fn a_half_written_checkpoint_is_ignored_then_removed() {
        let root = tempfile::tempdir().unwrap();
        let (var_map, optimizer) = model();
        save(root.path(), 3, &var_map, &optimizer);
        let torn = root.path().join("step-00000006.tmp-999999");
        fs::create_dir(&torn).unwrap();
        fs::write(torn.join(WEIGHTS_FILE), b"half").unwrap();

        let latest = load_latest(root.path()).unwrap().unwrap();
        assert_eq!(
            (latest.step, latest.data_position["index"].as_u64()),
            (3, Some(12))
        );
        assert_eq!(latest.rng, Rng::from_seed(3));
        assert_eq!(latest.config, "seed = 1\n");

        save(root.path(), 6, &var_map, &optimizer);
        assert!(!torn.exists());
    }

    #[test]
    fn keeps_the_last_two_and_can_save_a_step_again() {
        let root = tempfile::tempdir().unwrap();
        let (var_map, optimizer) = model();
        for step in [2, 4, 6, 6] {
            save(root.path(), step, &var_map, &optimizer);
        }
        let steps: Vec<u64> = list_checkpoints(root.path())
            .unwrap()
            .into_iter()
            .map(|(step, _)| step)
            .collect();
        assert_eq!(steps, [4, 6]);
        let names: Vec<String> = fs::read_dir(root.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "no leftovers: {names:?}");
    }

    #[test]
    fn restores_weights_and_names_a_missing_tensor() {
        let root = tempfile::tempdir().unwrap();
        let (var_map, optimizer) = model();
        let directory = save(root.path(), 1, &var_map, &optimizer);

        let (fresh, mut fresh_optimizer) = model();
        load_latest(root.path())
            .unwrap()
            .unwrap()
            .restore(&fresh, &mut fresh_optimizer)
            .unwrap();
        let bits = |var_map: &VarMap| -> Vec<Vec<u32>> {
            named_vars(var_map)
                .iter()
                .map(|(_, var)| {
                    let values = var
                        .as_tensor()
                        .flatten_all()
                        .unwrap()
                        .to_vec1::<f32>()
                        .unwrap();
                    values.into_iter().map(f32::to_bits).collect()
                })
                .collect()
        };
        assert_eq!(bits(&fresh), bits(&var_map));

        let bigger = VarMap::new();
        let builder = VarBuilder::from_varmap(&bigger, DType::F32, &Device::Cpu);
        candle_nn::linear(2, 2, builder.pp("proj")).unwrap();
        builder.get((2,), "extra.weight").unwrap();
        let error = load_weights(&bigger, &directory.join(WEIGHTS_FILE))
            .unwrap_err()
            .to_string();
        assert!(
            error.ends_with("model.safetensors: no tensor named extra.weight"),
            "{error}"
        );

        let wrong_dtype = VarMap::new();
        let builder = VarBuilder::from_varmap(&wrong_dtype, DType::BF16, &Device::Cpu);
        candle_nn::linear(2, 2, builder.pp("proj")).unwrap();
        let error = load_weights(&wrong_dtype, &directory.join(WEIGHTS_FILE))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("file has [2] F32, model has [2] BF16"),
            "{error}"
        );
    }
}
