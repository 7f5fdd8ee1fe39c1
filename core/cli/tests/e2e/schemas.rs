//! The JSON Schemas in `schemas/` are generated from the Rust types; this test fails when the checked-in
//! copies are stale. Regenerate them with:
//!
//! ```text
//! NESTFORM_UPDATE_SCHEMAS=1 cargo test -p nestform --test e2e schemas
//! ```

use std::path::PathBuf;

fn schemas() -> Vec<(&'static str, serde_json::Value)> {
    let config = schemars::schema_for!(nestform_types::ResourceSpec);
    vec![
        ("config.schema.json", serde_json::to_value(config).unwrap()),
        ("state.schema.json", nestform_state::file::StateFileV1::json_schema()),
        (
            "plan.schema.json",
            serde_json::to_value(nestform_engine::render::json::plan_json_schema()).unwrap(),
        ),
    ]
}

#[test]
fn schemas_are_fresh() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../schemas");
    let update = std::env::var_os("NESTFORM_UPDATE_SCHEMAS").is_some();
    let mut stale = Vec::new();
    for (name, schema) in schemas() {
        let text = serde_json::to_string_pretty(&schema).unwrap() + "\n";
        let path = dir.join(name);
        if update {
            std::fs::write(&path, &text).unwrap();
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            stale.push(name);
        }
    }
    assert!(
        stale.is_empty(),
        "stale JSON Schemas in schemas/: {stale:?}; regenerate with \
         `NESTFORM_UPDATE_SCHEMAS=1 cargo test -p nestform --test e2e schemas` and commit them"
    );
}
