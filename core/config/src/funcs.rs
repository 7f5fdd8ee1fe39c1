//! The function library of the language: `cidrsubnet`, `format`, `join`, `file`, ...
//!
//! hcl-rs takes functions as plain `fn` pointers, so `file` cannot capture the configuration
//! directory; it reads it from a thread-local that [`with_base_dir`] sets around each evaluation.

use std::cell::RefCell;
use std::io::Read;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use hcl::eval::{Context, FuncArgs, FuncDef, ParamType};
use hcl::{Map, Value};
use ipnet::Ipv4Net;

use crate::limits;

thread_local! {
    static BASE_DIR: RefCell<Option<PathBuf>> = const { RefCell::new(None) };
}

/// Runs `f` with `file()` resolving paths relative to `dir`.
pub fn with_base_dir<T>(dir: Option<&Path>, f: impl FnOnce() -> T) -> T {
    let old = BASE_DIR.with(|b| b.replace(dir.map(Path::to_path_buf)));
    let out = f();
    BASE_DIR.with(|b| *b.borrow_mut() = old);
    out
}

/// Declares every function of the language in `ctx`.
pub fn declare_all(ctx: &mut Context) {
    use ParamType::*;
    let any_list = || ParamType::array_of(Any);
    let def = |params: Vec<ParamType>, f: hcl::eval::Func| FuncDef::builder().params(params).build(f);
    let variadic = |params: Vec<ParamType>, rest: ParamType, f: hcl::eval::Func| {
        FuncDef::builder().params(params).variadic_param(rest).build(f)
    };
    ctx.declare_func("cidrsubnet", def(vec![String, Number, Number], cidrsubnet));
    ctx.declare_func("cidrhost", def(vec![String, Number], cidrhost));
    ctx.declare_func("cidrnetmask", def(vec![String], cidrnetmask));
    ctx.declare_func("format", variadic(vec![String], Any, format));
    ctx.declare_func("join", def(vec![String, any_list()], join));
    ctx.declare_func("split", def(vec![String, String], split));
    ctx.declare_func("lookup", variadic(vec![ParamType::object_of(Any), String], Any, lookup));
    ctx.declare_func("length", def(vec![Any], length));
    ctx.declare_func("toset", def(vec![any_list()], toset));
    ctx.declare_func("tolist", def(vec![any_list()], tolist));
    ctx.declare_func("keys", def(vec![ParamType::object_of(Any)], keys));
    ctx.declare_func("values", def(vec![ParamType::object_of(Any)], values));
    ctx.declare_func("merge", variadic(vec![], ParamType::object_of(Any), merge));
    ctx.declare_func("concat", variadic(vec![], any_list(), concat));
    ctx.declare_func("range", variadic(vec![Number], Number, range));
    ctx.declare_func("min", variadic(vec![Number], Number, min));
    ctx.declare_func("max", variadic(vec![Number], Number, max));
    ctx.declare_func("upper", def(vec![String], upper));
    ctx.declare_func("lower", def(vec![String], lower));
    ctx.declare_func("replace", def(vec![String, String, String], replace));
    ctx.declare_func("file", def(vec![String], file));
    ctx.declare_func("jsonencode", def(vec![Any], jsonencode));
    ctx.declare_func("element", def(vec![any_list(), Number], element));
    ctx.declare_func("contains", def(vec![any_list(), Any], contains));
    ctx.declare_func("coalesce", variadic(vec![], Any, coalesce));
    crate::limits::declare_guards(ctx);
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

fn int(v: &Value, what: &str) -> Result<i64, String> {
    v.as_number()
        .and_then(|n| n.as_i64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)))
        .ok_or_else(|| format!("{what} must be a whole number, got `{v}`"))
}

fn net(v: &Value) -> Result<Ipv4Net, String> {
    s(v).parse::<Ipv4Net>().map_err(|_| format!("`{}` is not an IPv4 CIDR like `10.0.0.0/16`", s(v)))
}

fn cidrsubnet(args: FuncArgs) -> Result<Value, String> {
    let base = net(&args[0])?;
    let newbits = int(&args[1], "newbits")?;
    let num = int(&args[2], "netnum")?;
    let prefix = base.prefix_len() as i64 + newbits;
    if !(0..=32).contains(&prefix) || newbits < 0 {
        return Err(format!("cannot extend the prefix `/{}` by {newbits} bits", base.prefix_len()));
    }
    if num < 0 || num >= 1i64 << newbits {
        return Err(format!("netnum {num} does not fit in {newbits} bits"));
    }
    let host_bits = 32 - prefix as u32;
    let start = u32::from(base.network()) as u64 + ((num as u64) << host_bits);
    let sub = Ipv4Net::new(Ipv4Addr::from(start as u32), prefix as u8).map_err(|e| e.to_string())?;
    Ok(Value::from(sub.to_string()))
}

fn cidrhost(args: FuncArgs) -> Result<Value, String> {
    let base = net(&args[0])?;
    let num = int(&args[1], "hostnum")?;
    let size = 1i64 << (32 - base.prefix_len() as u32);
    let idx = if num < 0 { size + num } else { num };
    if !(0..size).contains(&idx) {
        return Err(format!("host number {num} is outside `{base}`"));
    }
    let addr = Ipv4Addr::from(u32::from(base.network()) + idx as u32);
    Ok(Value::from(addr.to_string()))
}

fn cidrnetmask(args: FuncArgs) -> Result<Value, String> {
    Ok(Value::from(net(&args[0])?.netmask().to_string()))
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn format(args: FuncArgs) -> Result<Value, String> {
    let spec = s(&args[0]);
    let mut rest = args.iter().skip(1);
    let mut out = String::new();
    let mut chars = spec.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some(verb @ ('s' | 'd' | 'v' | 'q')) => {
                let v = rest.next().ok_or_else(|| format!("not enough arguments for `{spec}`"))?;
                match verb {
                    'd' => out.push_str(&int(v, "a `%d` argument")?.to_string()),
                    'q' => out.push_str(&serde_json::to_string(&plain(v)).unwrap_or_default()),
                    _ => out.push_str(&plain(v)),
                }
            }
            other => {
                return Err(format!(
                    "unsupported verb `%{}`; use `%s`, `%d`, `%v`, `%q` or `%%`",
                    other.unwrap_or(' ')
                ))
            }
        }
    }
    Ok(Value::from(out))
}

fn join(args: FuncArgs) -> Result<Value, String> {
    let items: Vec<String> = args[1].as_array().unwrap().iter().map(plain).collect();
    Ok(Value::from(items.join(s(&args[0]))))
}

fn split(args: FuncArgs) -> Result<Value, String> {
    let (sep, text) = (s(&args[0]), s(&args[1]));
    // An empty separator splits between every character; count before building.
    let parts = if sep.is_empty() { text.chars().count() + 2 } else { text.matches(sep).count() + 1 };
    if parts as u64 > limits::MAX_ELEMENTS {
        return Err(format!(
            "`split` would make {parts} parts, more than the {} a list may hold",
            limits::MAX_ELEMENTS
        ));
    }
    let parts: Vec<Value> = text.split(sep).map(Value::from).collect();
    Ok(Value::Array(parts))
}

fn lookup(args: FuncArgs) -> Result<Value, String> {
    let map = args[0].as_object().unwrap();
    match (map.get(s(&args[1])), args.get(2)) {
        (Some(v), _) => Ok(v.clone()),
        (None, Some(default)) => Ok(default.clone()),
        (None, None) => Err(format!("no key `{}`; give a default as the third argument", s(&args[1]))),
    }
}

fn length(args: FuncArgs) -> Result<Value, String> {
    let n = match &args[0] {
        Value::Array(a) => a.len(),
        Value::Object(o) => o.len(),
        Value::String(s) => s.chars().count(),
        other => return Err(format!("cannot take the length of `{other}`")),
    };
    Ok(Value::from(n as u64))
}

fn toset(args: FuncArgs) -> Result<Value, String> {
    let mut out: Vec<Value> = Vec::new();
    for v in args[0].as_array().unwrap() {
        if !out.contains(v) {
            out.push(v.clone());
        }
    }
    Ok(Value::Array(out))
}

fn tolist(args: FuncArgs) -> Result<Value, String> {
    Ok(args[0].clone())
}

fn keys(args: FuncArgs) -> Result<Value, String> {
    let mut k: Vec<&String> = args[0].as_object().unwrap().keys().collect();
    k.sort();
    Ok(Value::Array(k.into_iter().map(|k| Value::from(k.clone())).collect()))
}

fn values(args: FuncArgs) -> Result<Value, String> {
    let o = args[0].as_object().unwrap();
    let mut k: Vec<&String> = o.keys().collect();
    k.sort();
    Ok(Value::Array(k.into_iter().map(|k| o[k].clone()).collect()))
}

fn merge(args: FuncArgs) -> Result<Value, String> {
    let mut out = Map::new();
    for o in args.iter() {
        for (k, v) in o.as_object().unwrap() {
            out.insert(k.clone(), v.clone());
        }
    }
    Ok(Value::Object(out))
}

fn concat(args: FuncArgs) -> Result<Value, String> {
    Ok(Value::Array(args.iter().flat_map(|a| a.as_array().unwrap().clone()).collect()))
}

/// The most numbers `range` makes: enough to number the instances of a lab.
const MAX_RANGE: i128 = 1024;

fn range(args: FuncArgs) -> Result<Value, String> {
    let nums = args.iter().map(|v| int(v, "a `range` argument")).collect::<Result<Vec<_>, _>>()?;
    let (start, end, step) =
        match nums[..] {
            [end] => (0, end, 1),
            [start, end] => (start, end, if end >= start { 1 } else { -1 }),
            [start, end, step] => (start, end, step),
            _ => return Err(
                "takes one to three numbers: `range(end)`, `range(start, end)`, `range(start, end, step)`"
                    .into(),
            ),
        };
    // In i128 nothing overflows (`end - start` of two i64 did); the length is known before
    // anything is built.
    let (start, end, step) = (start as i128, end as i128, step as i128);
    if step == 0 || (end - start).signum() * step.signum() < 0 {
        return Err(format!("step {step} never gets from {start} to {end}"));
    }
    let len = ((end - start).abs() + step.abs() - 1) / step.abs();
    if len > MAX_RANGE {
        return Err(format!("`range` makes at most {MAX_RANGE} numbers, and this one would make {len}"));
    }
    Ok(Value::Array((0..len).map(|i| Value::from((start + i * step) as i64)).collect()))
}

fn fold(args: &FuncArgs, pick: fn(f64, f64) -> bool) -> Result<Value, String> {
    let best = args.iter().filter_map(|v| v.as_number()).fold(None::<&hcl::Number>, |best, n| match best {
        Some(b) if !pick(n.as_f64().unwrap_or(0.0), b.as_f64().unwrap_or(0.0)) => Some(b),
        _ => Some(n),
    });
    Ok(Value::Number(best.cloned().unwrap_or_else(|| hcl::Number::from(0u64))))
}

fn min(args: FuncArgs) -> Result<Value, String> {
    fold(&args, |a, b| a < b)
}

fn max(args: FuncArgs) -> Result<Value, String> {
    fold(&args, |a, b| a > b)
}

fn upper(args: FuncArgs) -> Result<Value, String> {
    Ok(Value::from(s(&args[0]).to_uppercase()))
}

fn lower(args: FuncArgs) -> Result<Value, String> {
    Ok(Value::from(s(&args[0]).to_lowercase()))
}

fn replace(args: FuncArgs) -> Result<Value, String> {
    let (text, from, to) = (s(&args[0]), s(&args[1]), s(&args[2]));
    // Replacing can square a text's length (`replace(s, "a", s)`); count before building.
    let hits =
        if from.is_empty() { text.chars().count() as u64 + 1 } else { text.matches(from).count() as u64 };
    let len = text.len() as u64 + hits * to.len() as u64;
    if len > limits::MAX_TEXT_BYTES {
        return Err(format!(
            "`replace` would make {len} bytes of text, more than {} MiB",
            limits::MAX_TEXT_BYTES >> 20
        ));
    }
    Ok(Value::from(text.replace(from, to)))
}

fn file(args: FuncArgs) -> Result<Value, String> {
    let rel = Path::new(s(&args[0]));
    let path =
        BASE_DIR.with(|b| b.borrow().as_ref().map(|d| d.join(rel))).unwrap_or_else(|| rel.to_path_buf());
    let cannot = |e: std::io::Error| format!("cannot read `{}`: {e}", path.display());
    // At most one byte past the limit is read: `file("/dev/zero")` must not fill the memory.
    let mut text = String::new();
    std::fs::File::open(&path)
        .and_then(|f| f.take(limits::MAX_TEXT_BYTES + 1).read_to_string(&mut text))
        .map_err(cannot)?;
    if text.len() as u64 > limits::MAX_TEXT_BYTES {
        return Err(format!("`{}` is larger than {} MiB", path.display(), limits::MAX_TEXT_BYTES >> 20));
    }
    Ok(Value::from(text))
}

fn jsonencode(args: FuncArgs) -> Result<Value, String> {
    serde_json::to_string(&args[0]).map(Value::from).map_err(|e| e.to_string())
}

fn element(args: FuncArgs) -> Result<Value, String> {
    let list = args[0].as_array().unwrap();
    if list.is_empty() {
        return Err("cannot take an element of an empty list".into());
    }
    let i = int(&args[1], "the index")?;
    Ok(list[i.rem_euclid(list.len() as i64) as usize].clone())
}

fn contains(args: FuncArgs) -> Result<Value, String> {
    Ok(Value::Bool(args[0].as_array().unwrap().contains(&args[1])))
}

fn coalesce(args: FuncArgs) -> Result<Value, String> {
    args.iter()
        .find(|v| !v.is_null() && v.as_str() != Some(""))
        .cloned()
        .ok_or_else(|| "every argument is null or empty".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(src: &str) -> Result<Value, String> {
        let mut ctx = Context::new();
        declare_all(&mut ctx);
        let expr: hcl::Expression = src.parse().map_err(|e: hcl::Error| e.to_string())?;
        hcl::eval::Evaluate::evaluate(&expr, &ctx).map_err(|e| e.to_string())
    }

    #[test]
    fn cidr_functions() {
        assert_eq!(eval(r#"cidrsubnet("10.0.0.0/16", 8, 3)"#).unwrap(), Value::from("10.0.3.0/24"));
        assert_eq!(eval(r#"cidrhost("10.0.3.0/24", 1)"#).unwrap(), Value::from("10.0.3.1"));
        assert_eq!(eval(r#"cidrhost("10.0.3.0/24", -2)"#).unwrap(), Value::from("10.0.3.254"));
        assert_eq!(eval(r#"cidrnetmask("10.0.0.0/16")"#).unwrap(), Value::from("255.255.0.0"));
        assert!(eval(r#"cidrsubnet("10.0.0.0/16", 2, 4)"#).is_err());
    }

    #[test]
    fn string_functions() {
        assert_eq!(eval(r#"format("%s-%d", "g", 3)"#).unwrap(), Value::from("g-3"));
        assert_eq!(eval(r#"join(",", ["a", "b"])"#).unwrap(), Value::from("a,b"));
        assert_eq!(eval(r#"split(",", "a,b")"#).unwrap(), hcl::value!(["a", "b"]));
        assert_eq!(eval(r#"upper("ab")"#).unwrap(), Value::from("AB"));
        assert_eq!(eval(r#"replace("a-b", "-", "_")"#).unwrap(), Value::from("a_b"));
        assert_eq!(eval(r#"jsonencode({a = 1})"#).unwrap(), Value::from(r#"{"a":1}"#));
    }

    #[test]
    fn collection_functions() {
        assert_eq!(eval(r#"length([1, 2, 3])"#).unwrap(), Value::from(3u64));
        assert_eq!(eval(r#"keys({b = 1, a = 2})"#).unwrap(), hcl::value!(["a", "b"]));
        assert_eq!(eval(r#"values({b = 1, a = 2})"#).unwrap(), hcl::value!([2, 1]));
        assert_eq!(eval(r#"merge({a = 1}, {a = 2, b = 3})"#).unwrap(), hcl::value!({ a = 2, b = 3 }));
        assert_eq!(eval(r#"concat([1], [2, 3])"#).unwrap(), hcl::value!([1, 2, 3]));
        assert_eq!(eval(r#"range(3)"#).unwrap(), hcl::value!([0, 1, 2]));
        assert_eq!(eval(r#"range(3, 0)"#).unwrap(), hcl::value!([3, 2, 1]));
        assert_eq!(eval(r#"range(0, 10, 4)"#).unwrap(), hcl::value!([0, 4, 8]));
        assert_eq!(eval(r#"range(1024)"#).unwrap().as_array().unwrap().len(), 1024);
        assert_eq!(eval(r#"toset(["a", "a", "b"])"#).unwrap(), hcl::value!(["a", "b"]));
        assert_eq!(eval(r#"lookup({a = 1}, "b", 7)"#).unwrap(), Value::from(7u64));
        assert_eq!(eval(r#"element(["a", "b"], 3)"#).unwrap(), Value::from("b"));
        assert_eq!(eval(r#"contains(["a"], "a")"#).unwrap(), Value::Bool(true));
        assert_eq!(eval(r#"coalesce("", "x")"#).unwrap(), Value::from("x"));
        assert_eq!(eval(r#"max(1, 5, 3)"#).unwrap(), Value::from(5u64));
        assert_eq!(eval(r#"min(4, 2, 3)"#).unwrap(), Value::from(2u64));
    }

    #[test]
    fn functions_refuse_to_build_too_much() {
        let e = eval(r#"range(1025)"#).unwrap_err();
        assert!(e.contains("`range` makes at most 1024 numbers, and this one would make 1025"), "{e}");
        // `end - start` overflowed an i64 (a panic in a debug build).
        let e = eval(r#"range(-9223372036854775808, 9223372036854775807)"#).unwrap_err();
        assert!(e.contains("would make 18446744073709551615"), "{e}");
        let e = eval(r#"range(9223372036854775806, 9223372036854775807, 9223372036854775807)"#).unwrap();
        assert_eq!(e, hcl::value!([9223372036854775806i64]));
        let big = "a".repeat(5000);
        let e = eval(&format!(r#"replace("{big}", "a", "{big}")"#)).unwrap_err();
        assert!(e.contains("`replace` would make 25005000 bytes of text, more than 16 MiB"), "{e}");
        let e = eval(&format!(r#"split(",", "{}")"#, ",".repeat(100_000))).unwrap_err();
        assert!(e.contains("`split` would make 100001 parts"), "{e}");
        let e = eval(r#"file("/dev/zero")"#).unwrap_err();
        assert!(e.contains("is larger than 16 MiB"), "{e}");
    }

    #[test]
    fn file_reads_relative_to_the_base_dir() {
        let dir = std::env::temp_dir().join(format!("nf-funcs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("x.txt"), "hello").unwrap();
        let v = with_base_dir(Some(&dir), || eval(r#"file("x.txt")"#)).unwrap();
        assert_eq!(v, Value::from("hello"));
        assert!(with_base_dir(Some(&dir), || eval(r#"file("nope.txt")"#)).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
