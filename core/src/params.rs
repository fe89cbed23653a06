//! Plugin parameters: the schema a plugin declares (name, type, default, doc) and the typed values it gets.
//! The pipeline loader checks every value against the schema before a plugin is built, so a plugin reads
//! its parameters with the accessors below and never sees a wrong type.
use anyhow::{anyhow, Result};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Ty {
    Bool,
    Int,
    Float,
    Str,
    /// A filesystem path; relative paths are resolved against the directory of the file that sets them
    /// (the working directory for `--set`).
    Path,
    Choice(&'static [&'static str]),
    Ints,
    Floats,
    Strs,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Default {
    /// The pipeline must set it.
    Required,
    /// May be left unset; the plugin sees `None`.
    Unset,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'static str),
    Ints(&'static [i64]),
    Floats(&'static [f64]),
    Strs(&'static [&'static str]),
}

/// One parameter of a plugin's schema.
#[derive(Clone, Copy, Debug)]
pub struct Param {
    pub name: &'static str,
    pub ty: Ty,
    pub default: Default,
    pub doc: &'static str,
    /// Inclusive bounds for numbers (and for every element of a number list).
    pub min: Option<f64>,
    pub max: Option<f64>,
}

impl Param {
    const fn new(name: &'static str, ty: Ty, default: Default, doc: &'static str) -> Param {
        Param { name, ty, default, doc, min: None, max: None }
    }
    pub const fn bool(name: &'static str, default: bool, doc: &'static str) -> Param {
        Param::new(name, Ty::Bool, Default::Bool(default), doc)
    }
    pub const fn int(name: &'static str, default: i64, doc: &'static str) -> Param {
        Param::new(name, Ty::Int, Default::Int(default), doc)
    }
    pub const fn float(name: &'static str, default: f64, doc: &'static str) -> Param {
        Param::new(name, Ty::Float, Default::Float(default), doc)
    }
    pub const fn str(name: &'static str, default: &'static str, doc: &'static str) -> Param {
        Param::new(name, Ty::Str, Default::Str(default), doc)
    }
    pub const fn choice(name: &'static str, default: &'static str, choices: &'static [&'static str], doc: &'static str) -> Param {
        Param::new(name, Ty::Choice(choices), Default::Str(default), doc)
    }
    pub const fn path(name: &'static str, doc: &'static str) -> Param {
        Param::new(name, Ty::Path, Default::Required, doc)
    }
    pub const fn ints(name: &'static str, default: &'static [i64], doc: &'static str) -> Param {
        Param::new(name, Ty::Ints, Default::Ints(default), doc)
    }
    pub const fn floats(name: &'static str, default: &'static [f64], doc: &'static str) -> Param {
        Param::new(name, Ty::Floats, Default::Floats(default), doc)
    }
    pub const fn strs(name: &'static str, default: &'static [&'static str], doc: &'static str) -> Param {
        Param::new(name, Ty::Strs, Default::Strs(default), doc)
    }
    /// The parameter has no default: the pipeline must set it.
    pub const fn required(mut self) -> Param {
        self.default = Default::Required;
        self
    }
    /// The parameter may be left unset.
    pub const fn optional(mut self) -> Param {
        self.default = Default::Unset;
        self
    }
    pub const fn min(mut self, min: f64) -> Param {
        self.min = Some(min);
        self
    }
    pub const fn max(mut self, max: f64) -> Param {
        self.max = Some(max);
        self
    }
    pub const fn range(self, min: f64, max: f64) -> Param {
        self.min(min).max(max)
    }

    /// The type as shown in `rifle plugins` and error messages.
    pub fn type_name(&self) -> String {
        match self.ty {
            Ty::Bool => "bool".into(),
            Ty::Int => "int".into(),
            Ty::Float => "float".into(),
            Ty::Str => "string".into(),
            Ty::Path => "path".into(),
            Ty::Choice(c) => c.join(" | "),
            Ty::Ints => "[int]".into(),
            Ty::Floats => "[float]".into(),
            Ty::Strs => "[string]".into(),
        }
    }

    pub fn default_value(&self) -> Option<Value> {
        Some(match self.default {
            Default::Required | Default::Unset => return None,
            Default::Bool(b) => Value::Bool(b),
            Default::Int(i) => Value::Int(i),
            Default::Float(f) => Value::Float(f),
            Default::Str(s) => Value::Str(s.into()),
            Default::Ints(v) => Value::List(v.iter().map(|&i| Value::Int(i)).collect()),
            Default::Floats(v) => Value::List(v.iter().map(|&f| Value::Float(f)).collect()),
            Default::Strs(v) => Value::List(v.iter().map(|&s| Value::Str(s.into())).collect()),
        })
    }

    /// Checks one YAML value against this parameter; `Err` is the message (the caller adds the location).
    pub fn check(&self, value: &serde_yaml::Value) -> Result<Value, String> {
        use serde_yaml::Value as Y;
        let scalar = |ty: Ty, v: &Y| -> Result<Value, String> {
            match (ty, v) {
                (Ty::Bool, Y::Bool(b)) => Ok(Value::Bool(*b)),
                (Ty::Int, Y::Number(n)) if n.is_i64() || n.is_u64() => {
                    n.as_i64().map(Value::Int).ok_or_else(|| format!("{n} is too large for an integer"))
                }
                (Ty::Int, Y::Number(n)) => Err(format!("expected an integer, found the float {n}")),
                (Ty::Float, Y::Number(n)) => Ok(Value::Float(n.as_f64().unwrap_or(f64::NAN))),
                (Ty::Str | Ty::Path, Y::String(s)) => Ok(Value::Str(s.clone())),
                (Ty::Choice(choices), Y::String(s)) if choices.contains(&s.as_str()) => Ok(Value::Str(s.clone())),
                (Ty::Choice(choices), other) => Err(format!(
                    "expected one of {}, found {}{}",
                    choices.join(", "),
                    describe(other),
                    suggestion(&yaml_text(other), choices.iter().copied())
                )),
                (ty, other) => Err(format!("expected {}, found {}{}", ty_article(ty), describe(other), bool_hint(ty, other))),
            }
        };
        let checked = match (self.ty, value) {
            (Ty::Ints | Ty::Floats | Ty::Strs, Y::Sequence(items)) => {
                let elem = match self.ty {
                    Ty::Ints => Ty::Int,
                    Ty::Floats => Ty::Float,
                    _ => Ty::Str,
                };
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    out.push(scalar(elem, item).map_err(|e| format!("element [{i}]: {e}"))?);
                }
                Value::List(out)
            }
            (Ty::Ints | Ty::Floats | Ty::Strs, other) => {
                return Err(format!("expected a list ({}), found {}", self.type_name(), describe(other)))
            }
            (ty, v) => scalar(ty, v)?,
        };
        self.check_bounds(&checked)?;
        Ok(checked)
    }

    fn check_bounds(&self, value: &Value) -> Result<(), String> {
        match value {
            Value::List(items) => items.iter().try_for_each(|v| self.check_bounds(v)),
            Value::Int(_) | Value::Float(_) => {
                let x = value.as_f64().unwrap_or(f64::NAN);
                if x.is_nan() {
                    return Err("is not a number".into());
                }
                match (self.min, self.max) {
                    (Some(lo), Some(hi)) if !(lo..=hi).contains(&x) => Err(format!("{x} is outside [{lo}, {hi}]")),
                    (Some(lo), None) if x < lo => Err(format!("{x} is below the minimum {lo}")),
                    (None, Some(hi)) if x > hi => Err(format!("{x} is above the maximum {hi}")),
                    _ => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }
}

fn ty_article(ty: Ty) -> &'static str {
    match ty {
        Ty::Bool => "a bool (true or false)",
        Ty::Int => "an integer",
        Ty::Float => "a number",
        Ty::Str => "a string",
        Ty::Path => "a path (string)",
        _ => "a value of another type",
    }
}

/// YAML 1.1 spelled booleans `yes/no/on/off`; this loader reads YAML 1.2, where they are strings.
fn bool_hint(ty: Ty, v: &serde_yaml::Value) -> String {
    match (ty, v.as_str().map(str::to_ascii_lowercase).as_deref()) {
        (Ty::Bool, Some("yes" | "on" | "y")) => " (YAML 1.2 reads it as a string: write true)".into(),
        (Ty::Bool, Some("no" | "off" | "n")) => " (YAML 1.2 reads it as a string: write false)".into(),
        (Ty::Int | Ty::Float, Some(text)) if text.trim().parse::<f64>().is_ok() => " (numbers must not be quoted)".into(),
        _ => String::new(),
    }
}

pub fn describe(v: &serde_yaml::Value) -> String {
    use serde_yaml::Value as Y;
    match v {
        Y::Null => "nothing (null)".into(),
        Y::Bool(b) => format!("the bool {b}"),
        Y::Number(n) if n.is_f64() => format!("the float {n}"),
        Y::Number(n) => format!("the integer {n}"),
        Y::String(s) => format!("the string {s:?}"),
        Y::Sequence(_) => "a list".into(),
        Y::Mapping(_) => "a mapping".into(),
        Y::Tagged(t) => format!("a value tagged {}", t.tag),
    }
}

fn yaml_text(v: &serde_yaml::Value) -> String {
    v.as_str().map(str::to_string).unwrap_or_default()
}

/// " (did you mean `x`?)" for the closest candidate, when one is close enough to be a plausible typo.
pub fn suggestion<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    closest(word, candidates).map(|c| format!(" (did you mean `{c}`?)")).unwrap_or_default()
}

pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|(d, c)| *d <= (c.len().max(word.len()) / 3).max(1) + 1)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// A checked parameter value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<Value>),
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x:?}"),
            Value::Str(s) => write!(f, "{s}"),
            Value::List(v) => write!(f, "[{}]", v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", ")),
        }
    }
}

impl Value {
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }
    pub fn to_yaml(&self) -> serde_yaml::Value {
        match self {
            Value::Bool(b) => (*b).into(),
            Value::Int(i) => (*i).into(),
            Value::Float(f) => (*f).into(),
            Value::Str(s) => s.clone().into(),
            Value::List(v) => serde_yaml::Value::Sequence(v.iter().map(Value::to_yaml).collect()),
        }
    }
}

/// A plugin's checked parameters, defaults filled in.
#[derive(Clone, Debug, Default)]
pub struct Params {
    /// `plugin` at `path in the pipeline`, for messages.
    pub origin: String,
    pub values: BTreeMap<String, Value>,
}

impl Params {
    fn get(&self, name: &str) -> Result<&Value> {
        self.values.get(name).ok_or_else(|| anyhow!("{}: parameter `{name}` is not set", self.origin))
    }
    fn wrong(&self, name: &str, want: &str) -> anyhow::Error {
        anyhow!("{}: parameter `{name}` is not {want}", self.origin)
    }
    pub fn is_set(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }
    pub fn bool(&self, name: &str) -> Result<bool> {
        match self.get(name)? {
            Value::Bool(b) => Ok(*b),
            _ => Err(self.wrong(name, "a bool")),
        }
    }
    pub fn int(&self, name: &str) -> Result<i64> {
        match self.get(name)? {
            Value::Int(i) => Ok(*i),
            _ => Err(self.wrong(name, "an integer")),
        }
    }
    pub fn usize(&self, name: &str) -> Result<usize> {
        usize::try_from(self.int(name)?).map_err(|_| self.wrong(name, "a non-negative integer"))
    }
    pub fn float(&self, name: &str) -> Result<f64> {
        self.get(name)?.as_f64().ok_or_else(|| self.wrong(name, "a number"))
    }
    pub fn str(&self, name: &str) -> Result<&str> {
        match self.get(name)? {
            Value::Str(s) => Ok(s),
            _ => Err(self.wrong(name, "a string")),
        }
    }
    pub fn path(&self, name: &str) -> Result<PathBuf> {
        self.str(name).map(PathBuf::from)
    }
    pub fn opt_path(&self, name: &str) -> Result<Option<PathBuf>> {
        self.is_set(name).then(|| self.path(name)).transpose()
    }
    pub fn opt_float(&self, name: &str) -> Result<Option<f64>> {
        self.is_set(name).then(|| self.float(name)).transpose()
    }
    pub fn opt_int(&self, name: &str) -> Result<Option<i64>> {
        self.is_set(name).then(|| self.int(name)).transpose()
    }
    fn list(&self, name: &str) -> Result<&[Value]> {
        match self.get(name)? {
            Value::List(v) => Ok(v),
            _ => Err(self.wrong(name, "a list")),
        }
    }
    pub fn floats(&self, name: &str) -> Result<Vec<f64>> {
        self.list(name)?.iter().map(|v| v.as_f64().ok_or_else(|| self.wrong(name, "a list of numbers"))).collect()
    }
    pub fn ints(&self, name: &str) -> Result<Vec<i64>> {
        self.list(name)?
            .iter()
            .map(|v| match v {
                Value::Int(i) => Ok(*i),
                _ => Err(self.wrong(name, "a list of integers")),
            })
            .collect()
    }
    pub fn strs(&self, name: &str) -> Result<Vec<String>> {
        self.list(name)?
            .iter()
            .map(|v| match v {
                Value::Str(s) => Ok(s.clone()),
                _ => Err(self.wrong(name, "a list of strings")),
            })
            .collect()
    }
}
