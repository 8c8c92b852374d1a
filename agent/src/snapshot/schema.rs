//! The snapshot's JSON Schema, `docs/snapshot.schema.json`: generated from the
//! contract's types (their doc comments are its descriptions), with every object
//! closed to keys it does not list, so that a snapshot with an undocumented key
//! fails validation. The test here keeps the file equal to the types; the cli
//! test validates a real snapshot against the file with an independent validator.

use serde_json::Value;

use super::Snapshot;

/// The schema of [`Snapshot`], draft 2020-12.
fn generate() -> Value {
    let generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
    let mut schema = generator.into_root_schema_for::<Snapshot>().to_value();
    close(&mut schema);
    // No `$id`: the contract's name is no URI, and a validator resolves the
    // schema's own references against it (`#/$defs/...` became
    // `cgscope.snapshot/cgscope.snapshot/v1`, unresolvable, on the node).
    schema
}

/// Every object schema with listed keys requires them all (the snapshot writes
/// `null` for absent data, it never leaves a key out) and admits no others.
fn close(schema: &mut Value) {
    match schema {
        Value::Object(o) => {
            if let Some(Value::Object(properties)) = o.get("properties") {
                let keys = properties.keys().cloned().map(Value::String).collect();
                o.insert("required".into(), Value::Array(keys));
                o.entry("additionalProperties")
                    .or_insert(Value::Bool(false));
            }
            o.values_mut().for_each(close);
        }
        Value::Array(a) => a.iter_mut().for_each(close),
        _ => {}
    }
}

#[test]
fn documented_schema_is_the_types_schema() {
    let want = serde_json::to_string_pretty(&generate()).unwrap() + "\n";
    crate::assert_blessed(
        "docs/snapshot.schema.json",
        &want,
        "the snapshot's types changed its JSON form: within v1 keys may be added, \
         never renamed or removed; if that holds, CGSCOPE_BLESS=1 cargo test -p cgscope \
         --lib snapshot::schema rewrites it",
    );
}
