//! Variable values: `-var` beats `-var-file`, which beats `NF_VAR_<name>`, which beats `default`.

use std::sync::Arc;

use hcl::edit::Span;
use hcl::eval::Context;
use hcl::Value;

use crate::diag::{Diagnostic, SourceFile, SourceRange};
use crate::load::{header_range, range_of, Loader};
use crate::suggest;
use crate::value::type_name;
use crate::VarInputs;

/// A value as given on the command line or in the environment: HCL when it parses as a number,
/// bool, list or object, else the string itself.
pub fn parse_loose(text: &str) -> Value {
    use hcl::edit::expr::Expression as E;
    match hcl::edit::parser::parse_expr(text) {
        Ok(e @ (E::Number(_) | E::Bool(_) | E::Array(_) | E::Object(_))) => {
            let mut ctx = Context::new();
            crate::limits::declare_guards(&mut ctx);
            crate::limits::evaluate(&crate::limits::guarded(&e), &ctx).unwrap_or_else(|_| Value::from(text))
        }
        _ => Value::from(text),
    }
}

/// The declared `type` of a variable, checked loosely: primitives are converted, collections are
/// checked only for their kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum VarType {
    Any,
    String,
    Number,
    Bool,
    List,
    Map,
}

fn var_type(expr: &hcl::edit::expr::Expression) -> Option<VarType> {
    use hcl::edit::expr::Expression as E;
    let name = match expr {
        E::Variable(v) => v.as_str().to_string(),
        E::FuncCall(f) => f.name.name.as_str().to_string(),
        _ => return None,
    };
    Some(match name.as_str() {
        "any" => VarType::Any,
        "string" => VarType::String,
        "number" => VarType::Number,
        "bool" => VarType::Bool,
        "list" | "set" | "tuple" => VarType::List,
        "map" | "object" => VarType::Map,
        _ => return None,
    })
}

fn convert(v: Value, ty: VarType) -> Result<Value, String> {
    let name = type_name(&v);
    match (ty, v) {
        (VarType::Any, v) => Ok(v),
        (VarType::String, v @ Value::String(_)) => Ok(v),
        (VarType::String, Value::Number(n)) => Ok(Value::from(n.to_string())),
        (VarType::String, Value::Bool(b)) => Ok(Value::from(b.to_string())),
        (VarType::Number, v @ Value::Number(_)) => Ok(v),
        (VarType::Number, Value::String(s)) => match parse_loose(&s) {
            v @ Value::Number(_) => Ok(v),
            _ => Err(format!("a number, got string `\"{s}\"`")),
        },
        (VarType::Bool, v @ Value::Bool(_)) => Ok(v),
        (VarType::Bool, Value::String(s)) if s == "true" || s == "false" => Ok(Value::Bool(s == "true")),
        (VarType::List, v @ Value::Array(_)) => Ok(v),
        (VarType::Map, v @ Value::Object(_)) => Ok(v),
        (ty, _) => Err(format!(
            "{}, got {name}",
            match ty {
                VarType::String => "a string",
                VarType::Number => "a number",
                VarType::Bool => "a bool",
                VarType::List => "a list",
                VarType::Map => "a map",
                VarType::Any => "any value",
            }
        )),
    }
}

/// Where a value came from, for messages.
enum Origin {
    Cli,
    File(SourceRange),
    Env,
    Default(SourceRange),
}

impl Loader {
    pub(crate) fn resolve_variables(&mut self, inputs: &VarInputs) {
        let declared: Vec<String> =
            self.variables.iter().map(|v| v.block.labels[0].as_str().to_string()).collect();
        let names: Vec<&str> = declared.iter().map(String::as_str).collect();
        let mut from_files: Vec<(String, Value, SourceRange)> = vec![];
        for path in &inputs.files {
            let text = match std::fs::read_to_string(path) {
                Ok(t) => t,
                Err(e) => {
                    self.error(
                        Diagnostic::error(format!("cannot read variable file `{}`: {e}", path.display()))
                            .with_help("check the path given to `-var-file`"),
                    );
                    continue;
                }
            };
            let file = Arc::new(SourceFile::new(path.display().to_string(), text));
            from_files.extend(self.read_var_file(&file, &names));
        }
        for (k, _) in &inputs.cli {
            if !declared.contains(k) {
                self.error(Diagnostic::error(format!("`-var` sets `{k}`, which is not declared")).with_help(
                    match suggest::nearest(k, names.iter().copied()) {
                        Some(s) => format!("did you mean `{s}`?"),
                        None => format!("declare it with `variable \"{k}\" {{}}`"),
                    },
                ));
            }
        }
        for v in self.variables.clone() {
            let name = v.block.labels[0].as_str().to_string();
            let body = &v.block.body;
            self.unknown_attributes(body, &v.file, &["type", "default", "description"], &[], "variable");
            let ty = match body.get_attribute("type") {
                None => VarType::Any,
                Some(a) => match var_type(&a.value) {
                    Some(t) => t,
                    None => {
                        self.error(
                            Diagnostic::error(format!("`{}` is not a type", a.value.to_string().trim()))
                                .with_range(range_of(&v.file, a.value.span()))
                                .with_help("use `string`, `number`, `bool`, `list(...)`, `set(...)`, `map(...)`, `object(...)` or `any`"),
                        );
                        VarType::Any
                    }
                },
            };
            let cli =
                inputs.cli.iter().rev().find(|(k, _)| *k == name).map(|(_, v)| (parse_loose(v), Origin::Cli));
            let file = || {
                from_files
                    .iter()
                    .rev()
                    .find(|(k, _, _)| *k == name)
                    .map(|(_, v, r)| (v.clone(), Origin::File(r.clone())))
            };
            let env = || std::env::var(format!("NF_VAR_{name}")).ok().map(|s| (parse_loose(&s), Origin::Env));
            let found = cli.or_else(file).or_else(env);
            let found = match found {
                Some(f) => Some(f),
                None => match body.get_attribute("default") {
                    Some(a) => {
                        let mut ctx = Context::new();
                        crate::funcs::declare_all(&mut ctx);
                        let plain = crate::limits::guarded(&a.value);
                        let range = range_of(&v.file, a.value.span());
                        match crate::limits::evaluate(&plain, &ctx) {
                            Ok(val) => Some((val, Origin::Default(range))),
                            Err(e) => {
                                self.error(
                                    Diagnostic::error(format!(
                                        "the default of `var.{name}` cannot be evaluated: {e}"
                                    ))
                                    .with_range(range)
                                    .with_help("a default is a constant; it cannot refer to other values"),
                                );
                                continue;
                            }
                        }
                    }
                    None => None,
                },
            };
            let Some((value, origin)) = found else {
                self.error(
                    Diagnostic::error(format!("variable `{name}` has no value"))
                        .with_range(v.header.clone())
                        .with_help(format!(
                            "set it with `-var {name}=VALUE`, in a `-var-file`, with the environment variable `NF_VAR_{name}`, or give it a `default`"
                        )),
                );
                continue;
            };
            match convert(value, ty) {
                Ok(val) => {
                    self.var_values.insert(name, val);
                }
                Err(why) => {
                    let (d, range) = match origin {
                        Origin::Cli => (format!("`-var {name}=...` must be {why}"), None),
                        Origin::Env => (format!("`NF_VAR_{name}` must be {why}"), None),
                        Origin::File(r) | Origin::Default(r) => {
                            (format!("`var.{name}` must be {why}"), Some(r))
                        }
                    };
                    let mut diag = Diagnostic::error(d)
                        .with_help("give a value of the declared `type`, or change the type");
                    if let Some(r) = range {
                        diag = diag.with_range(r).with_related(v.header.clone(), "declared here");
                    }
                    self.error(diag);
                }
            }
        }
    }

    fn read_var_file(&mut self, file: &Arc<SourceFile>, names: &[&str]) -> Vec<(String, Value, SourceRange)> {
        let body = match hcl::edit::parser::parse_body(&file.text) {
            Ok(b) => b,
            Err(e) => {
                self.error(
                    Diagnostic::error(format!("cannot parse `{}`: {}", file.name, e.message()))
                        .with_range(SourceRange::parse_error(file, e.location().offset()))
                        .with_help("a variable file holds only attributes, like `name = \"value\"`"),
                );
                return vec![];
            }
        };
        for block in body.blocks() {
            self.error(
                Diagnostic::error(format!(
                    "`{}` holds a block `{}`; a variables file holds only `name = value` attributes",
                    file.name,
                    block.ident.as_str()
                ))
                .with_range(header_range(file, block))
                .with_help("set variables as `name = value`; blocks belong in `*.nf.hcl` files"),
            );
        }
        let mut ctx = Context::new();
        crate::funcs::declare_all(&mut ctx);
        let mut out = vec![];
        for attr in body.attributes() {
            let key = attr.key.as_str();
            let range = range_of(file, attr.value.span());
            if !names.contains(&key) {
                self.error(
                    Diagnostic::warning(format!("`{}` sets `{key}`, which is not declared", file.name))
                        .with_range(range_of(file, attr.key.span()))
                        .with_help(suggest::help_for(key, "variables", names)),
                );
                continue;
            }
            let plain = crate::limits::guarded(&attr.value);
            match crate::limits::evaluate(&plain, &ctx) {
                Ok(v) => out.push((key.to_string(), v, range)),
                Err(e) => self.error(
                    Diagnostic::error(format!("cannot evaluate `{key}`: {e}"))
                        .with_range(range)
                        .with_help("values in a variable file are constants"),
                ),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loose_values() {
        assert_eq!(parse_loose("3"), Value::from(3u64));
        assert_eq!(parse_loose("true"), Value::Bool(true));
        assert_eq!(parse_loose("qemu:///system"), Value::from("qemu:///system"));
        assert_eq!(parse_loose("[1, 2]"), hcl::value!([1, 2]));
        assert_eq!(parse_loose("{ a = 1 }"), hcl::value!({ a = 1 }));
        assert_eq!(parse_loose("abc"), Value::from("abc"));
        // The engine replays non-string variables of a saved plan as JSON text.
        assert_eq!(parse_loose(r#"{"a":1,"b":[true]}"#), hcl::value!({ a = 1, b = [true] }));
    }

    #[test]
    fn conversion_follows_the_type() {
        assert_eq!(convert(Value::from("4"), VarType::Number), Ok(Value::from(4u64)));
        assert_eq!(convert(Value::from(4u64), VarType::String), Ok(Value::from("4")));
        assert!(convert(Value::from("x"), VarType::Bool).is_err());
    }
}
