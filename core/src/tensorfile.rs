//! safetensors files: reading any of the dtypes a checkpoint may hold, and writing atomically (temporary
//! file, fsync, rename, fsync of the folder) with a CRC32 in the metadata over everything else the file
//! holds (tensor names, dtypes, shapes and bytes, and the other metadata: a resume's training state is
//! there), so a torn or corrupted file is detected on load instead of silently training on garbage.
use anyhow::{anyhow, bail, Context, Result};
use safetensors::tensor::{Dtype, TensorView};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;
use tch::{Kind, Tensor};

pub const CHECKSUM_KEY: &str = "rifle.crc32";

fn dtype_of(kind: Kind) -> Result<Dtype> {
    Ok(match kind {
        Kind::Float => Dtype::F32,
        Kind::Double => Dtype::F64,
        Kind::Half => Dtype::F16,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Int64 => Dtype::I64,
        Kind::Int => Dtype::I32,
        Kind::Int16 => Dtype::I16,
        Kind::Int8 => Dtype::I8,
        Kind::Uint8 => Dtype::U8,
        Kind::Bool => Dtype::BOOL,
        other => bail!("cannot store a {other:?} tensor in safetensors"),
    })
}

fn kind_of(dtype: Dtype) -> Result<Kind> {
    Ok(match dtype {
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::I64 => Kind::Int64,
        Dtype::I32 => Kind::Int,
        Dtype::I16 => Kind::Int16,
        Dtype::I8 => Kind::Int8,
        Dtype::U8 => Kind::Uint8,
        Dtype::BOOL => Kind::Bool,
        other => bail!("unsupported dtype {other:?}"),
    })
}

/// A tensor's bytes in row-major order (moved to the CPU first).
pub fn tensor_bytes(t: &Tensor) -> Vec<u8> {
    let t = t.to_device(tch::Device::Cpu).contiguous();
    let numel = t.numel();
    let mut bytes = vec![0u8; numel * t.kind().elt_size_in_bytes()];
    t.copy_data_u8(&mut bytes, numel);
    bytes
}

/// One tensor as the checksum sees it: dtype, shape and bytes.
type Entry<'a> = (Dtype, &'a [usize], &'a [u8]);

fn crc(tensors: &BTreeMap<&str, Entry>, metadata: &HashMap<String, String>) -> String {
    let mut hasher = crc32fast::Hasher::new();
    // Lengths before variable-size fields, so that moving bytes between neighbours changes the sum.
    let mut field = |bytes: &[u8]| {
        hasher.update(&(bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    };
    for (name, (dtype, shape, bytes)) in tensors {
        field(name.as_bytes());
        field(format!("{dtype:?}{shape:?}").as_bytes());
        field(bytes);
    }
    let meta: BTreeMap<&String, &String> = metadata.iter().filter(|(k, _)| *k != CHECKSUM_KEY).collect();
    for (key, value) in meta {
        field(key.as_bytes());
        field(value.as_bytes());
    }
    format!("{:08x}", hasher.finalize())
}

/// Writes tensors and string metadata to `path` atomically. On any error the previous file is intact.
pub fn write(path: &Path, tensors: &[(String, Tensor)], metadata: &BTreeMap<String, String>) -> Result<()> {
    let mut owned = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
        owned.push((name.clone(), dtype_of(t.kind()).with_context(|| format!("tensor `{name}`"))?, shape, tensor_bytes(t)));
    }
    let table: BTreeMap<&str, Entry> = owned.iter().map(|(n, d, s, b)| (n.as_str(), (*d, s.as_slice(), b.as_slice()))).collect();
    let mut meta: HashMap<String, String> = metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    meta.insert(CHECKSUM_KEY.into(), crc(&table, &meta));
    let views = owned
        .iter()
        .map(|(n, d, s, b)| Ok((n.clone(), TensorView::new(*d, s.clone(), b).map_err(|e| anyhow!("tensor `{n}`: {e}"))?)))
        .collect::<Result<Vec<_>>>()?;
    let bytes = safetensors::serialize(views, Some(meta)).map_err(|e| anyhow!("{e}"))?;
    write_atomic(path, &bytes)
}

/// Writes bytes to `path` through a temporary file in the same folder, fsync and rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| -> Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write {} (the previous file, if any, is unchanged)", path.display()))
}

/// Tensors (sorted by name) and metadata. A file with a checksum is verified.
pub fn read(path: &Path) -> Result<(Vec<(String, Tensor)>, HashMap<String, String>)> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse(&bytes).with_context(|| format!("{} is not a valid safetensors file", path.display()))
}

/// `read` for files rifle wrote itself (checkpoints), which must carry the checksum: a damaged checksum
/// key must not turn the verification off.
pub fn read_checked(path: &Path) -> Result<(Vec<(String, Tensor)>, HashMap<String, String>)> {
    let (tensors, metadata) = read(path)?;
    if !metadata.contains_key(CHECKSUM_KEY) {
        bail!("{} has no `{CHECKSUM_KEY}` checksum: it is corrupt, or was not written by rifle", path.display());
    }
    Ok((tensors, metadata))
}

pub fn parse(bytes: &[u8]) -> Result<(Vec<(String, Tensor)>, HashMap<String, String>)> {
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| anyhow!("{e}"))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let file = safetensors::SafeTensors::deserialize(bytes).map_err(|e| anyhow!("{e}"))?;
    let mut names: Vec<String> = file.names().into_iter().map(str::to_string).collect();
    names.sort();
    let mut table = BTreeMap::new();
    let mut out = Vec::with_capacity(names.len());
    for name in &names {
        let view = file.tensor(name).map_err(|e| anyhow!("tensor `{name}`: {e}"))?;
        let kind = kind_of(view.dtype()).with_context(|| format!("tensor `{name}`"))?;
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        out.push((name.clone(), Tensor::f_from_data_size(view.data(), &shape, kind).with_context(|| format!("tensor `{name}`"))?));
        table.insert(name.as_str(), (view.dtype(), view.shape().to_vec(), view.data()));
    }
    if let Some(expected) = metadata.get(CHECKSUM_KEY) {
        let refs: BTreeMap<&str, Entry> = table.iter().map(|(n, (d, s, b))| (*n, (*d, s.as_slice(), *b))).collect();
        let actual = crc(&refs, &metadata);
        if &actual != expected {
            bail!("checksum mismatch (stored {expected}, computed {actual}): the file is corrupt");
        }
    }
    Ok((out, metadata))
}
