//! A safetensors file read through a memory map: the kernel pages the bytes in as each tensor is
//! copied out, and the copied range is handed back at once (`madvise(MADV_DONTNEED)`), so a
//! checkpoint's bytes are never resident beside the tensors made from them — neither in an
//! anonymous buffer (`candle_core::safetensors::load` reads the file whole) nor as mapped pages
//! that stay in the process's RSS until the whole shard is done (candle's `MmapedSafetensors`).

use std::fmt;
use std::fs::File;
use std::path::Path;

use candle_core::safetensors::Load;
use candle_core::{Device, Tensor};
use memmap2::{Mmap, UncheckedAdvice};
use safetensors::tensor::{Metadata, SafeTensors, TensorView};

/// One memory-mapped safetensors file.
pub struct MappedSafetensors {
    mapped: Mmap,
    /// The header's length: tensor data offsets count from `8 + header_length`.
    header_length: usize,
    metadata: Metadata,
}

impl fmt::Debug for MappedSafetensors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MappedSafetensors")
            .field("tensors", &self.names().len())
            .finish()
    }
}

fn safetensors_error(error: &safetensors::SafeTensorError) -> candle_core::Error {
    candle_core::Error::Msg(error.to_string())
}

impl MappedSafetensors {
    /// Maps `path` and parses its header.
    pub fn open(path: &Path) -> candle_core::Result<Self> {
        let file = File::open(path).map_err(|source| {
            candle_core::Error::Msg(format!("opening {}: {source}", path.display()))
        })?;
        // SAFETY: a memory map is undefined behaviour only if the file is changed (truncated or
        // rewritten) while mapped. herd maps checkpoint files it only reads, holds the map while
        // it copies each tensor out into owned storage (`load`), and drops it when the file is
        // done; herd's own writers never rewrite a checkpoint in place (they write a temporary
        // file and rename it, which leaves the mapped inode intact). A user editing a checkpoint
        // file during the seconds it is being loaded is the one case left — the same contract as
        // transformers' and candle's own mmap loaders.
        let mapped = unsafe { Mmap::map(&file) }.map_err(|source| {
            candle_core::Error::Msg(format!("mapping {}: {source}", path.display()))
        })?;
        let (header_length, metadata) =
            SafeTensors::read_metadata(&mapped).map_err(|error| safetensors_error(&error))?;
        Ok(Self {
            mapped,
            header_length,
            metadata,
        })
    }

    /// The names of the tensors in the file.
    #[must_use]
    pub fn names(&self) -> Vec<String> {
        self.metadata.tensors().into_keys().collect()
    }

    /// Tensor `name` copied out of the map onto `device`, in the file's dtype; the pages it was
    /// read from leave the process's memory (the page cache keeps them while memory allows).
    pub fn load(&self, name: &str, device: &Device) -> candle_core::Result<Tensor> {
        let info = self
            .metadata
            .info(name)
            .ok_or_else(|| candle_core::Error::Msg(format!("no tensor {name} in the file")))?;
        let (start, end) = info.data_offsets;
        let base = 8 + self.header_length;
        let bytes = self
            .mapped
            .get(base + start..base + end)
            .ok_or_else(|| candle_core::Error::Msg(format!("tensor {name} runs past the file")))?;
        let view = TensorView::new(info.dtype, info.shape.clone(), bytes)
            .map_err(|error| safetensors_error(&error))?;
        let tensor = view.load(device)?;
        if end > start {
            // SAFETY: MADV_DONTNEED on a read-only file mapping only drops this process's page
            // table entries for the range: a later read of it faults the same bytes back in from
            // the file, so no reference into the map can observe different contents. `bytes` and
            // `view`, the only borrows of the range, are not used after `load` above, which copied
            // the data into storage the returned tensor owns.
            unsafe {
                self.mapped.unchecked_advise_range(
                    UncheckedAdvice::DontNeed,
                    base + start,
                    end - start,
                )
            }
            .map_err(|source| candle_core::Error::Msg(format!("releasing {name}: {source}")))?;
        }
        Ok(tensor)
    }
}
