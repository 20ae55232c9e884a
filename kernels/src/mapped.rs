//! A safetensors file read through a memory map: the kernel pages the bytes in as tensors are
//! copied out and can drop them again, instead of the whole file sitting in an anonymous buffer
//! beside the tensors made from it (`candle_core::safetensors::load` reads the file whole).

use std::fmt;
use std::path::Path;

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{Device, Tensor};

/// One memory-mapped safetensors file.
pub struct MappedSafetensors {
    mapped: MmapedSafetensors,
}

impl fmt::Debug for MappedSafetensors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MappedSafetensors")
            .field("tensors", &self.names().len())
            .finish()
    }
}

impl MappedSafetensors {
    /// Maps `path` and parses its header.
    pub fn open(path: &Path) -> candle_core::Result<Self> {
        // SAFETY: a memory map is undefined behaviour only if the file is changed (truncated or
        // rewritten) while mapped. herd maps checkpoint files it only reads, holds the map while
        // it copies each tensor out into owned storage (`load`), and drops it when the file is
        // done; herd's own writers never rewrite a checkpoint in place (they write a temporary
        // file and rename it, which leaves the mapped inode intact). A user editing a checkpoint
        // file during the seconds it is being loaded is the one case left — the same contract as
        // transformers' and candle's own mmap loaders.
        let mapped = unsafe { MmapedSafetensors::new(path)? };
        Ok(Self { mapped })
    }

    /// The names of the tensors in the file.
    #[must_use]
    pub fn names(&self) -> Vec<String> {
        self.mapped
            .tensors()
            .into_iter()
            .map(|(name, _)| name)
            .collect()
    }

    /// Tensor `name` copied out of the map onto `device`, in the file's dtype.
    pub fn load(&self, name: &str, device: &Device) -> candle_core::Result<Tensor> {
        self.mapped.load(name, device)
    }
}
