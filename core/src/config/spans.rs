//! Where each value of a pipeline came from (file, line, column), keyed by its path in the pipeline
//! (`strategies[0].rifle.reinits`). serde_yaml parses the values; this index is built from the same text
//! by yaml-rust2's event parser, following anchors, aliases and merge keys, so that any error found later
//! (in a plugin's own parameters, say) can point at the line that caused it.
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

#[derive(Clone, Debug, PartialEq)]
pub enum Span {
    File { file: Arc<PathBuf>, line: usize, column: usize },
    /// A `--set` override on the command line.
    CommandLine(String),
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Span::File { file, line, column } => write!(f, "{}:{line}:{column}", file.display()),
            Span::CommandLine(arg) => write!(f, "--set {arg}"),
        }
    }
}

/// Spans of a key and of its value.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub key: Option<Span>,
    pub value: Span,
}

/// A key written twice in one mapping: its path, where it first appears and where again.
#[derive(Clone, Debug, PartialEq)]
pub struct Duplicate {
    pub path: String,
    pub first: Span,
    pub again: Span,
}

#[derive(Clone, Debug, Default)]
pub struct SpanIndex {
    entries: BTreeMap<String, Entry>,
    /// Keys written twice in one mapping (YAML forbids it; merged keys are not duplicates).
    pub duplicates: Vec<Duplicate>,
}

pub fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

pub fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

impl SpanIndex {
    /// Indexes a YAML text. Syntax errors are reported by serde_yaml, which parses the same text first.
    pub fn build(text: &str, file: Arc<PathBuf>) -> SpanIndex {
        let mut builder = Builder { file, index: SpanIndex::default(), stack: Vec::new(), anchors: BTreeMap::new() };
        let _ = Parser::new_from_str(text).load(&mut builder, false);
        builder.index
    }

    /// The span of the value at `path`, or of its nearest ancestor that has one.
    pub fn value(&self, path: &str) -> Option<&Span> {
        self.lookup(path).map(|e| &e.value)
    }

    /// The span of the key at `path` (for unknown-key errors), else of its value or an ancestor.
    pub fn key(&self, path: &str) -> Option<&Span> {
        self.lookup(path).map(|e| e.key.as_ref().unwrap_or(&e.value))
    }

    fn lookup(&self, path: &str) -> Option<&Entry> {
        let mut p = path;
        loop {
            if let Some(e) = self.entries.get(p) {
                return Some(e);
            }
            p = parent(p)?;
        }
    }

    pub fn insert(&mut self, path: String, entry: Entry) {
        self.entries.insert(path, entry);
    }

    /// Forgets the spans of everything below `path` (a `--set` replaced that subtree).
    pub fn remove_below(&mut self, path: &str) {
        self.entries.retain(|p, _| !(p.starts_with(&format!("{path}.")) || p.starts_with(&format!("{path}["))));
    }

    /// Overlays `other` (a file that extends this one): its paths win.
    pub fn overlay(&mut self, other: SpanIndex) {
        self.entries.extend(other.entries);
    }

    /// Drops the entries of paths that are not in the final pipeline (list entries an extending file
    /// replaced, say), so that lookups fall back to the nearest ancestor that is.
    pub fn prune(&mut self, root: &serde_yaml::Value) {
        let mut live = std::collections::BTreeSet::new();
        collect_paths(root, String::new(), &mut live);
        self.entries.retain(|p, _| live.contains(p));
    }
}

fn collect_paths(value: &serde_yaml::Value, path: String, out: &mut std::collections::BTreeSet<String>) {
    match value {
        serde_yaml::Value::Mapping(m) => {
            for (k, v) in m {
                let key = k.as_str().map(str::to_string).unwrap_or_else(|| serde_yaml::to_string(k).unwrap_or_default().trim().to_string());
                collect_paths(v, child(&path, &key), out);
            }
        }
        serde_yaml::Value::Sequence(items) => {
            for (i, v) in items.iter().enumerate() {
                collect_paths(v, index(&path, i), out);
            }
        }
        _ => {}
    }
    out.insert(path);
}

fn parent(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    let cut = path.rfind(['.', '[']).unwrap_or(0);
    Some(&path[..cut])
}

enum Frame {
    /// `keys`: the keys seen so far with their marks; `start`: where the parser marked the mapping.
    Map { path: String, key: Option<(String, Marker)>, anchor: usize, merge: bool, keys: BTreeMap<String, Marker>, start: Marker },
    Seq { path: String, next: usize, anchor: usize, merge: bool },
}

struct Builder {
    file: Arc<PathBuf>,
    index: SpanIndex,
    stack: Vec<Frame>,
    /// anchor id → entries relative to the anchored node ("" is the node itself).
    anchors: BTreeMap<usize, Vec<(String, Entry)>>,
}

impl Builder {
    fn span(&self, mark: Marker) -> Span {
        Span::File { file: self.file.clone(), line: mark.line(), column: mark.col() + 1 }
    }

    /// Where the next node goes: its path, the span of its key, and whether it is merged (`<<`) content.
    fn place(&mut self) -> Option<(String, Option<Span>, bool)> {
        let file = self.file.clone();
        match self.stack.last_mut()? {
            Frame::Map { path, key, merge, .. } => {
                let (k, mark) = key.take()?;
                let key_span = Span::File { file, line: mark.line(), column: mark.col() + 1 };
                if k == "<<" {
                    Some((path.clone(), None, true))
                } else {
                    Some((child(path, &k), Some(key_span), *merge))
                }
            }
            Frame::Seq { path, next, merge, .. } => {
                let i = *next;
                *next += 1;
                // a sequence under `<<` lists mappings merged into the parent, at the parent's path
                if *merge {
                    Some((path.clone(), None, true))
                } else {
                    Some((index(path, i), None, false))
                }
            }
        }
    }

    /// A mapping key: remembered for the value that follows, checked for duplicates. The parser marks a
    /// block mapping at its first key's `:`; the mapping's span is moved back to the key itself.
    fn key(&mut self, value: String, mark: Marker) {
        let file = self.file.clone();
        let span = |m: Marker| Span::File { file: file.clone(), line: m.line(), column: m.col() + 1 };
        let Some(Frame::Map { path, key, merge, keys, start, .. }) = self.stack.last_mut() else { return };
        if keys.is_empty() && !*merge && (mark.line(), mark.col()) < (start.line(), start.col()) {
            if let Some(e) = self.index.entries.get_mut(path.as_str()) {
                e.value = span(mark);
            }
        }
        if value != "<<" {
            if let Some(first) = keys.get(&value) {
                self.index.duplicates.push(Duplicate { path: child(path, &value), first: span(*first), again: span(mark) });
            }
            keys.insert(value.clone(), mark);
        }
        *key = Some((value, mark));
    }

    fn record(&mut self, path: &str, entry: Entry, merged: bool) {
        if merged && self.index.entries.contains_key(path) {
            return; // explicit keys win over merged ones
        }
        self.index.entries.insert(path.to_string(), entry);
    }

    fn remember_anchor(&mut self, anchor: usize, path: &str) {
        if anchor == 0 {
            return;
        }
        let below = |p: &str| p == path || p.starts_with(&format!("{path}.")) || p.starts_with(&format!("{path}["));
        let entries =
            self.index.entries.iter().filter(|(p, _)| below(p)).map(|(p, e)| (p[path.len()..].to_string(), e.clone())).collect();
        self.anchors.insert(anchor, entries);
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        let is_key = matches!(self.stack.last(), Some(Frame::Map { key: None, .. }));
        match event {
            Event::Scalar(value, ..) if is_key => self.key(value, mark),
            Event::Scalar(_, _, anchor, _) => {
                let Some((path, key, merged)) = self.place().or(Some((String::new(), None, false))) else { return };
                let value = self.span(mark);
                self.record(&path, Entry { key, value }, merged);
                self.remember_anchor(anchor, &path);
            }
            Event::Alias(anchor) => {
                let Some((path, key, merged)) = self.place() else { return };
                let value = self.span(mark);
                let copied = self.anchors.get(&anchor).cloned().unwrap_or_default();
                for (rel, entry) in copied {
                    if merged && rel.is_empty() {
                        continue; // the merged mapping itself is not a node of the parent
                    }
                    let p = format!("{path}{rel}");
                    let entry = if rel.is_empty() { Entry { key: key.clone(), value: value.clone() } } else { entry };
                    self.record(&p, entry, merged);
                }
            }
            Event::MappingStart(anchor, _) | Event::SequenceStart(anchor, _) => {
                let (path, key, merged) = self.place().unwrap_or((String::new(), None, false));
                if !merged {
                    let value = self.span(mark);
                    self.record(&path, Entry { key, value }, false);
                }
                self.stack.push(if matches!(event, Event::MappingStart(..)) {
                    Frame::Map { path, key: None, anchor, merge: merged, keys: BTreeMap::new(), start: mark }
                } else {
                    Frame::Seq { path, next: 0, anchor, merge: merged }
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                if let Some(Frame::Map { path, anchor, .. } | Frame::Seq { path, anchor, .. }) = self.stack.pop() {
                    self.remember_anchor(anchor, &path);
                }
            }
            _ => {}
        }
    }
}
