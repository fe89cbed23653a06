//! PyTorch checkpoints written by `torch.save(state_dict)`: the zip format (torch ≥ 1.6) and the legacy
//! pre-1.6 format (a run of pickles followed by raw storages). A small pickle machine understands what a
//! state dict uses (dicts, OrderedDict, tuples, numbers, strings, `_rebuild_tensor_v2`, `_rebuild_parameter`
//! and persistent storage ids); anything else is kept opaque and ignored. Nothing in the file is executed.
use anyhow::{anyhow, bail, Context, Result};
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;
use tch::{Kind, Tensor};

#[derive(Clone, Debug)]
enum P {
    Mark,
    None,
    Int(i64),
    Str(String),
    /// A bool, float or bytes value: never needed to rebuild a state dict.
    Scalar,
    Tuple(Vec<P>),
    List(Vec<P>),
    Dict(Vec<(P, P)>),
    Global(String, String),
    /// A storage reference: ('storage', type, key, location, numel, ...).
    Persistent(Box<P>),
    Tensor(TensorRef),
    /// An object this reader does not build (kept so the stack stays consistent).
    Opaque,
}

#[derive(Clone, Debug)]
struct TensorRef {
    storage_type: String,
    key: String,
    offset: i64,
    size: Vec<i64>,
    stride: Vec<i64>,
}

/// Reads a `.pth`/`.pt` state dict into named tensors (nested dicts are flattened with `.`; a top-level
/// `state_dict` or `model` entry is unwrapped).
pub fn read(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let tensors = if bytes.starts_with(b"PK") { read_zip(&bytes) } else { read_legacy(&bytes) };
    tensors.with_context(|| format!("{}: not a readable PyTorch checkpoint", path.display()))
}

fn read_zip(bytes: &[u8]) -> Result<Vec<(String, Tensor)>> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes))?;
    let pkl = (0..archive.len())
        .filter_map(|i| archive.by_index(i).ok().map(|f| f.name().to_string()))
        .find(|n| n.ends_with("data.pkl"))
        .ok_or_else(|| anyhow!("zip archive without data.pkl (a TorchScript or other archive?)"))?;
    let prefix = pkl.trim_end_matches("data.pkl").to_string();
    let mut pickle = Vec::new();
    archive.by_name(&pkl)?.read_to_end(&mut pickle)?;
    let mut machine = Machine::new(&pickle);
    let root = machine.run()?;
    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    let mut entries = Vec::new();
    flatten(&root, String::new(), &mut entries);
    let mut out = Vec::new();
    for (name, t) in entries {
        if !storages.contains_key(&t.key) {
            let mut data = Vec::new();
            archive
                .by_name(&format!("{prefix}data/{}", t.key))
                .with_context(|| format!("storage {} of `{name}` is missing", t.key))?
                .read_to_end(&mut data)?;
            storages.insert(t.key.clone(), data);
        }
        out.push((name.clone(), build(&t, &storages[&t.key]).with_context(|| format!("tensor `{name}`"))?));
    }
    Ok(out)
}

fn read_legacy(bytes: &[u8]) -> Result<Vec<(String, Tensor)>> {
    if bytes.first() != Some(&0x80) {
        bail!("neither a zip archive nor a pickle (first byte {:#04x})", bytes.first().copied().unwrap_or(0));
    }
    let mut machine = Machine::new(bytes);
    let magic = machine.run()?;
    if !matches!(magic, P::Int(_)) {
        bail!("not a torch.save file (no magic number)");
    }
    let _protocol = machine.run()?;
    let _sys_info = machine.run()?;
    let root = machine.run()?;
    let keys = match machine.run()? {
        P::List(keys) => keys.into_iter().filter_map(|k| if let P::Str(s) = k { Some(s) } else { None }).collect::<Vec<_>>(),
        _ => bail!("legacy format: missing the storage key list"),
    };
    let mut entries = Vec::new();
    flatten(&root, String::new(), &mut entries);
    let types: HashMap<&str, &str> = entries.iter().map(|(_, t)| (t.key.as_str(), t.storage_type.as_str())).collect();
    let mut pos = machine.pos;
    let mut storages = HashMap::new();
    for key in &keys {
        let count = u64::from_le_bytes(bytes.get(pos..pos + 8).ok_or_else(|| anyhow!("truncated storage {key}"))?.try_into()?) as usize;
        pos += 8;
        let elem = kind_of(types.get(key.as_str()).copied().unwrap_or("FloatStorage"))?.elt_size_in_bytes();
        let data = bytes.get(pos..pos + count * elem).ok_or_else(|| anyhow!("truncated storage {key}"))?;
        storages.insert(key.clone(), data.to_vec());
        pos += count * elem;
    }
    entries
        .into_iter()
        .map(|(name, t)| {
            let data = storages.get(&t.key).ok_or_else(|| anyhow!("tensor `{name}`: storage {} missing", t.key))?;
            Ok((name.clone(), build(&t, data).with_context(|| format!("tensor `{name}`"))?))
        })
        .collect()
}

fn kind_of(storage_type: &str) -> Result<Kind> {
    Ok(match storage_type {
        "FloatStorage" => Kind::Float,
        "DoubleStorage" => Kind::Double,
        "HalfStorage" => Kind::Half,
        "BFloat16Storage" => Kind::BFloat16,
        "LongStorage" => Kind::Int64,
        "IntStorage" => Kind::Int,
        "ShortStorage" => Kind::Int16,
        "CharStorage" => Kind::Int8,
        "ByteStorage" => Kind::Uint8,
        "BoolStorage" => Kind::Bool,
        other => bail!("unsupported storage type {other}"),
    })
}

fn build(t: &TensorRef, data: &[u8]) -> Result<Tensor> {
    let kind = kind_of(&t.storage_type)?;
    let numel = (data.len() / kind.elt_size_in_bytes()) as i64;
    let flat = Tensor::f_from_data_size(data, &[numel], kind)?;
    let needed = t.offset + t.size.iter().zip(&t.stride).map(|(s, st)| (s - 1).max(0) * st).sum::<i64>() + 1;
    if t.size.iter().all(|&s| s > 0) && needed > numel {
        bail!("size {:?} / stride {:?} / offset {} run past a storage of {numel} elements", t.size, t.stride, t.offset);
    }
    Ok(flat.f_as_strided(&t.size, &t.stride, Some(t.offset))?.contiguous())
}

/// Collects tensors from nested dicts, unwrapping the usual `{"state_dict": ...}` / `{"model": ...}`.
fn flatten(value: &P, prefix: String, out: &mut Vec<(String, TensorRef)>) {
    match value {
        P::Dict(items) => {
            let key_of = |k: &P| if let P::Str(s) = k { Some(s.clone()) } else { None };
            if prefix.is_empty() {
                for wrapper in ["state_dict", "model"] {
                    if let Some((_, inner @ P::Dict(_))) = items.iter().find(|(k, _)| key_of(k).as_deref() == Some(wrapper)) {
                        return flatten(inner, prefix, out);
                    }
                }
            }
            for (k, v) in items {
                if let Some(k) = key_of(k) {
                    let name = if prefix.is_empty() { k } else { format!("{prefix}.{k}") };
                    flatten(v, name, out);
                }
            }
        }
        P::Tensor(t) => out.push((prefix, t.clone())),
        _ => {}
    }
}

struct Machine<'a> {
    bytes: &'a [u8],
    pos: usize,
    stack: Vec<P>,
    memo: BTreeMap<u32, P>,
}

impl<'a> Machine<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Machine { bytes, pos: 0, stack: Vec::new(), memo: BTreeMap::new() }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let bytes: &'a [u8] = self.bytes;
        let s = bytes.get(self.pos..self.pos + n).ok_or_else(|| anyhow!("pickle truncated at byte {}", self.pos))?;
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into()?))
    }
    fn line(&mut self) -> Result<String> {
        let rest = &self.bytes[self.pos..];
        let end = rest.iter().position(|&b| b == b'\n').ok_or_else(|| anyhow!("pickle: unterminated line"))?;
        self.pos += end + 1;
        Ok(String::from_utf8_lossy(&rest[..end]).into_owned())
    }
    fn pop(&mut self) -> Result<P> {
        self.stack.pop().ok_or_else(|| anyhow!("pickle: stack underflow at byte {}", self.pos))
    }
    fn pop_mark(&mut self) -> Result<Vec<P>> {
        let at = self.stack.iter().rposition(|p| matches!(p, P::Mark)).ok_or_else(|| anyhow!("pickle: no mark"))?;
        let items = self.stack.split_off(at + 1);
        self.stack.pop();
        Ok(items)
    }
    fn top(&mut self) -> Result<&mut P> {
        self.stack.last_mut().ok_or_else(|| anyhow!("pickle: empty stack"))
    }
    fn string(&mut self, n: usize) -> Result<()> {
        let s = String::from_utf8_lossy(self.take(n)?).into_owned();
        self.stack.push(P::Str(s));
        Ok(())
    }

    /// Runs one pickle to its STOP and returns the result.
    fn run(&mut self) -> Result<P> {
        loop {
            let op = self.u8()?;
            match op {
                0x80 => {
                    self.u8()?;
                }
                0x95 => {
                    self.take(8)?;
                }
                b'.' => return self.pop(),
                b'(' => self.stack.push(P::Mark),
                b'}' => self.stack.push(P::Dict(vec![])),
                b']' => self.stack.push(P::List(vec![])),
                b')' => self.stack.push(P::Tuple(vec![])),
                b'N' => self.stack.push(P::None),
                0x88 | 0x89 => self.stack.push(P::Scalar),
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(P::Int(v.into()))
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.take(2)?.try_into()?);
                    self.stack.push(P::Int(v.into()))
                }
                b'J' => {
                    let v = i32::from_le_bytes(self.take(4)?.try_into()?);
                    self.stack.push(P::Int(v.into()))
                }
                0x8a => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?;
                    let mut v: i128 = 0;
                    for (i, byte) in b.iter().enumerate().take(16) {
                        v |= i128::from(*byte) << (8 * i);
                    }
                    if n > 0 && n < 16 && b[n - 1] & 0x80 != 0 {
                        v -= 1i128 << (8 * n);
                    }
                    self.stack.push(P::Int(v as i64));
                }
                b'G' => {
                    self.take(8)?;
                    self.stack.push(P::Scalar)
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    self.string(n)?
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    self.string(n)?
                }
                0x8d => {
                    let n = u64::from_le_bytes(self.take(8)?.try_into()?) as usize;
                    self.string(n)?
                }
                b'U' => {
                    let n = self.u8()? as usize;
                    self.string(n)?
                }
                b'T' => {
                    let n = self.u32()? as usize;
                    self.string(n)?
                }
                b'C' => {
                    let n = self.u8()? as usize;
                    self.take(n)?;
                    self.stack.push(P::Scalar)
                }
                b'B' => {
                    let n = self.u32()? as usize;
                    self.take(n)?;
                    self.stack.push(P::Scalar)
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.stack.push(P::Global(module, name))
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (P::Str(m), P::Str(n)) => self.stack.push(P::Global(m, n)),
                        _ => bail!("pickle: STACK_GLOBAL needs two strings"),
                    }
                }
                b'q' => {
                    let k = self.u8()?.into();
                    let v = self.top()?.clone();
                    self.memo.insert(k, v);
                }
                b'r' => {
                    let k = self.u32()?;
                    let v = self.top()?.clone();
                    self.memo.insert(k, v);
                }
                0x94 => {
                    let k = self.memo.len() as u32;
                    let v = self.top()?.clone();
                    self.memo.insert(k, v);
                }
                b'h' | b'j' => {
                    let k = if op == b'h' { self.u8()?.into() } else { self.u32()? };
                    let v = self.memo.get(&k).cloned().ok_or_else(|| anyhow!("pickle: memo {k} missing"))?;
                    self.stack.push(v);
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(P::Tuple(items))
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let at = self.stack.len().checked_sub(n).ok_or_else(|| anyhow!("pickle: stack underflow"))?;
                    let items = self.stack.split_off(at);
                    self.stack.push(P::Tuple(items));
                }
                b'Q' => {
                    let pid = self.pop()?;
                    self.stack.push(P::Persistent(Box::new(pid)))
                }
                b'R' | 0x81 => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    self.stack.push(reduce(callable, args)?)
                }
                b'b' => {
                    self.pop()?; // BUILD state (OrderedDict `_metadata`, parameter attributes): not needed
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    if let P::Dict(items) = self.top()? {
                        items.push((k, v));
                    }
                }
                b'u' => {
                    let flat = self.pop_mark()?;
                    if let P::Dict(items) = self.top()? {
                        let mut it = flat.into_iter();
                        while let (Some(k), Some(v)) = (it.next(), it.next()) {
                            items.push((k, v));
                        }
                    }
                }
                b'a' => {
                    let v = self.pop()?;
                    if let P::List(items) = self.top()? {
                        items.push(v);
                    }
                }
                b'e' => {
                    let more = self.pop_mark()?;
                    if let P::List(items) = self.top()? {
                        items.extend(more);
                    }
                }
                other => bail!("pickle: unsupported opcode {other:#04x} at byte {}", self.pos - 1),
            }
        }
    }
}

/// Applies the few callables a state dict needs; everything else becomes an opaque value.
fn reduce(callable: P, args: P) -> Result<P> {
    let P::Global(module, name) = &callable else { return Ok(P::Opaque) };
    let args = match args {
        P::Tuple(a) => a,
        _ => return Ok(P::Opaque),
    };
    Ok(match (module.as_str(), name.as_str()) {
        ("collections", "OrderedDict") => P::Dict(vec![]),
        ("torch._utils", "_rebuild_tensor_v2" | "_rebuild_tensor") => {
            let ints = |p: Option<&P>| -> Vec<i64> {
                match p {
                    Some(P::Tuple(v)) => v.iter().filter_map(|x| if let P::Int(i) = x { Some(*i) } else { None }).collect(),
                    _ => vec![],
                }
            };
            let Some(P::Persistent(pid)) = args.first() else { bail!("pickle: tensor without a storage") };
            let P::Tuple(pid) = pid.as_ref() else { bail!("pickle: malformed storage id") };
            let storage_type = match pid.get(1) {
                Some(P::Global(_, n)) => n.clone(),
                _ => bail!("pickle: storage without a type"),
            };
            let key = match pid.get(2) {
                Some(P::Str(k)) => k.clone(),
                _ => bail!("pickle: storage without a key"),
            };
            let offset = if let Some(P::Int(o)) = args.get(1) { *o } else { 0 };
            P::Tensor(TensorRef { storage_type, key, offset, size: ints(args.get(2)), stride: ints(args.get(3)) })
        }
        ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => args.into_iter().next().unwrap_or(P::Opaque),
        _ => P::Opaque,
    })
}
