//! avro-confluent decoding with writer schemas from a schema registry, against a local HTTP
//! stub that speaks the registry API (`GET /schemas/ids/{id}`).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use apache_avro::types::{Record, Value};
use apache_avro::Schema;
use leadflow::codec::avro::{frame, WEB_SCHEMA};
use leadflow::codec::registry::SchemaRegistry;
use leadflow::model::event::Source;

/// The producer's evolved web schema: a new `device` field, no `session_id`.
fn evolved() -> String {
    let mut v: serde_json::Value = serde_json::from_str(WEB_SCHEMA).expect("schema JSON");
    let fields = v["fields"].as_array_mut().expect("fields");
    fields.retain(|f| f["name"] != "session_id");
    fields.push(serde_json::json!({"name": "device", "type": "string", "default": "desktop"}));
    v.to_string()
}

/// Serves id 7 (evolved) and id 8 (incompatible: occurred_at is a string); 404 otherwise.
fn stub() -> String {
    let server = tiny_http::Server::http("127.0.0.1:0").expect("stub listens");
    let addr = server.server_addr().to_ip().expect("ip");
    let incompatible = r#"{"type":"record","name":"WebEvent","namespace":"io.leadflow.input","fields":[{"name":"event_id","type":"string"},{"name":"lead_key","type":"string"},{"name":"occurred_at","type":"string"},{"name":"type","type":"string"}]}"#;
    let schemas: HashMap<&str, String> = [("7", evolved()), ("8", incompatible.to_string())].into();
    std::thread::spawn(move || {
        for req in server.incoming_requests() {
            let id = req.url().strip_prefix("/schemas/ids/").unwrap_or("");
            let resp = match schemas.get(id) {
                Some(s) => {
                    tiny_http::Response::from_string(serde_json::json!({ "schema": s }).to_string())
                }
                None => tiny_http::Response::from_string(
                    r#"{"error_code":40403,"message":"Schema not found"}"#,
                )
                .with_status_code(404),
            };
            let _ = req.respond(resp);
        }
    });
    format!("http://{addr}")
}

fn datum(writer: &Schema) -> Vec<u8> {
    let mut r = Record::new(writer).expect("record schema");
    r.put("event_id", "e-1");
    r.put("lead_key", "ana@acme.io");
    r.put("occurred_at", Value::TimestampMillis(1_794_837_900_000));
    r.put("type", "page_view");
    r.put(
        "url",
        Value::Union(1, Box::new(Value::String("https://x.io/pricing".into()))),
    );
    for f in ["referrer", "utm_source", "utm_medium", "utm_campaign"] {
        r.put(f, Value::Union(0, Box::new(Value::Null)));
    }
    r.put("device", "mobile");
    r.put(
        "properties",
        Value::Map(HashMap::from([(
            "plan".to_string(),
            Value::String("pro".into()),
        )])),
    );
    apache_avro::to_avro_datum(writer, r).expect("encode with the evolved schema")
}

#[test]
fn evolved_writer_schemas_are_fetched_once_and_resolved() {
    let registry = SchemaRegistry::new(&stub(), Duration::from_secs(5));
    let writer = Schema::parse_str(&evolved()).expect("evolved schema");
    let bytes = frame(7, &datum(&writer));
    let ev = registry
        .decode(Source::Web, &bytes)
        .expect("registry reachable")
        .expect("valid event");
    assert_eq!(ev.lead_key, "ana@acme.io");
    assert_eq!(ev.attribute("url"), Some("https://x.io/pricing"));
    assert_eq!(ev.attribute("plan"), Some("pro"));
    assert_eq!(
        ev.attribute("device"),
        None,
        "fields leadflow's schema lacks are dropped"
    );
    assert_eq!(
        ev.attribute("session_id"),
        None,
        "missing fields take their default (null)"
    );
    registry
        .decode(Source::Web, &bytes)
        .expect("reachable")
        .expect("valid");
    assert_eq!(
        registry.requests.load(Ordering::Relaxed),
        1,
        "the schema is cached by id"
    );
}

#[test]
fn unknown_ids_and_incompatible_schemas_are_invalid_input() {
    let registry = SchemaRegistry::new(&stub(), Duration::from_secs(5));
    let writer = Schema::parse_str(&evolved()).expect("evolved schema");
    let err = registry
        .decode(Source::Web, &frame(99, &datum(&writer)))
        .expect("reachable")
        .expect_err("unknown id");
    assert_eq!(err.code(), "unknown_schema");
    assert!(err.to_string().contains("schema id 99"), "{err}");
    let err = registry
        .decode(Source::Web, &frame(8, &datum(&writer)))
        .expect("reachable")
        .expect_err("incompatible");
    assert_eq!(err.code(), "undecodable");
    let err = registry
        .decode(Source::Web, b"\x01garbage")
        .expect("no lookup needed")
        .expect_err("bad magic");
    assert!(err.to_string().contains("magic byte"), "{err}");
}

#[test]
fn an_unreachable_registry_is_not_bad_input() {
    // Nothing listens on port 1 of loopback.
    let registry = SchemaRegistry::new("http://127.0.0.1:1", Duration::from_secs(2));
    let writer = Schema::parse_str(&evolved()).expect("evolved schema");
    let err = registry
        .decode(Source::Web, &frame(7, &datum(&writer)))
        .expect_err("unavailable, to retry, not dead-lettered");
    assert!(
        err.to_string().contains("schema registry unavailable"),
        "{err}"
    );
}
