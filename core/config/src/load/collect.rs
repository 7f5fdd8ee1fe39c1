//! Collecting the top-level blocks of every file: parse it, check each block's type, labels and
//! name, and file it under variables, locals, resources or outputs (a duplicate is reported).

use std::sync::Arc;

use hcl::edit::structure::{Block, Structure};
use hcl::edit::Span;
use nestform_types::ResourceType;

use super::schema::BLOCK_TYPES;
use super::{header_range, range_of, Loader, Located};
use crate::diag::{Diagnostic, SourceFile, SourceRange};
use crate::suggest;

impl Loader {
    pub(super) fn collect_file(&mut self, file: &Arc<SourceFile>) {
        let body = match hcl::edit::parser::parse_body(&file.text) {
            Ok(body) => body,
            Err(e) => {
                self.parse_failed = true;
                self.error(
                    Diagnostic::error(format!("cannot parse `{}`: {}", file.name, e.message()))
                        .with_range(SourceRange::parse_error(file, e.location().offset()))
                        .with_label(e.message().to_string())
                        .with_help("fix the syntax here; blocks look like `nested_guest \"NAME\" { ... }` and attributes like `key = value`"),
                );
                return;
            }
        };
        for structure in body.iter() {
            match structure {
                Structure::Attribute(attr) => self.error(
                    Diagnostic::error(format!(
                        "unexpected attribute `{}` at the top level",
                        attr.key.as_str()
                    ))
                    .with_range(range_of(file, attr.span()))
                    .with_help(
                        "attributes go inside a block; top-level values go in a `locals { ... }` block",
                    ),
                ),
                Structure::Block(block) => self.collect_block(file, block),
            }
        }
    }

    fn collect_block(&mut self, file: &Arc<SourceFile>, block: &Block) {
        let kind = block.ident.as_str();
        let header = header_range(file, block);
        let labels: Vec<&str> = block.labels.iter().map(|l| l.as_str()).collect();
        if !BLOCK_TYPES.contains(&kind) {
            self.error(
                Diagnostic::error(format!("unknown block type `{kind}`"))
                    .with_range(range_of(file, block.ident.span()))
                    .with_help(suggest::help_for(kind, "block types", &BLOCK_TYPES)),
            );
            return;
        }
        let want = if kind == "locals" { 0 } else { 1 };
        if labels.len() != want {
            let help = if want == 0 {
                "write `locals { ... }` without a name".to_string()
            } else {
                format!("write `{kind} \"NAME\" {{ ... }}` with exactly one name")
            };
            self.error(
                Diagnostic::error(format!(
                    "`{kind}` takes {want} label{}, got {}",
                    if want == 1 { "" } else { "s" },
                    labels.len()
                ))
                .with_range(header)
                .with_help(help),
            );
            return;
        }
        if let Some(name) = labels.first() {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                self.error(
                    Diagnostic::error(format!("`{name}` is not a valid name"))
                        .with_range(header)
                        .with_help("names have only letters, digits, `_` and `-`"),
                );
                return;
            }
        }
        let located = Located { block: block.clone(), file: file.clone(), header: header.clone() };
        let prior = match (kind, ResourceType::parse(kind)) {
            ("locals", _) => {
                for attr in block.body.attributes() {
                    let name = attr.key.as_str().to_string();
                    let range = range_of(file, attr.key.span());
                    if let Some((_, _, first)) = self.locals.get(&name) {
                        let first = first.clone();
                        self.duplicate(&format!("local.{name}"), range, first);
                    } else {
                        self.locals.insert(name, (attr.value.clone(), file.clone(), range));
                    }
                }
                for inner in block.body.blocks() {
                    self.error(
                        Diagnostic::error(format!("unexpected block `{}` in `locals`", inner.ident.as_str()))
                            .with_range(header_range(file, inner))
                            .with_help("`locals` holds only attributes, like `name = value`"),
                    );
                }
                None
            }
            ("variable", _) => {
                let prior = self
                    .variables
                    .iter()
                    .find(|v| v.block.labels[0].as_str() == labels[0])
                    .map(|v| v.header.clone());
                if prior.is_none() {
                    self.variables.push(located);
                }
                prior
            }
            ("output", _) => {
                let prior = self.outputs.get(labels[0]).map(|o| o.header.clone());
                if prior.is_none() {
                    self.outputs.insert(labels[0].to_string(), located);
                }
                prior
            }
            (_, Some(ty)) => {
                let key = (ty, labels[0].to_string());
                let prior = self.resources.get(&key).map(|r| r.header.clone());
                if prior.is_none() {
                    self.resources.insert(key, located);
                }
                prior
            }
            _ => None,
        };
        if let Some(first) = prior {
            self.duplicate(&format!("{kind}.{}", labels[0]), header, first);
        }
    }

    fn duplicate(&mut self, what: &str, here: SourceRange, first: SourceRange) {
        self.error(
            Diagnostic::error(format!("`{what}` is declared twice"))
                .with_range(here)
                .with_label("declared again here")
                .with_related(first, "first declared here")
                .with_help("rename one of them or remove the duplicate"),
        );
    }
}
