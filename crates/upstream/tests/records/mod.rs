//! One example of every record kind, shared by the golden and the compatibility tests.

#![allow(dead_code, clippy::unwrap_used)]

use airlock_model::{AssetPath, Quality, Reason, Severity, Timestamp, Transition, Value, ValueType};
use airlock_upstream::*;

pub fn t(s: &str) -> Timestamp {
    Timestamp::parse_rfc3339(s).unwrap()
}

pub fn path(s: &str) -> AssetPath {
    AssetPath::parse(s).unwrap()
}

const PRESS1: &str = "acme/dortmund/pressing/line3/cell1/press1";

fn sample(tag: &str, ty: ValueType, unit: Option<&str>, value: Option<Value>, quality: Quality) -> SampleRecord {
    SampleRecord {
        path: path(&format!("{PRESS1}/{tag}")),
        value_type: ty,
        unit: unit.map(Into::into),
        value,
        quality,
        source_time: None,
        gateway_time: t("2026-11-28T12:00:00Z"),
    }
}

/// `(golden file name, message id, record)`: the records whose JSON today's README documents.
pub fn examples() -> Vec<(&'static str, &'static str, Upstream)> {
    let at = t("2026-11-28T12:32:45.538Z");
    let press2 = path("acme/dortmund/pressing/line3/cell1/press2");
    vec![
        (
            "sample_f64",
            "demo-r3",
            Upstream::Sample(SampleRecord {
                gateway_time: at,
                ..sample("speed", ValueType::F64, Some("rpm"), Some(Value::F64(1479.9998779296875)), Quality::Good)
            }),
        ),
        (
            "sample_bad",
            "demo-r4",
            Upstream::Sample(SampleRecord {
                gateway_time: at,
                source_time: Some(t("2026-11-28T12:32:45.001Z")),
                ..sample("code", ValueType::U16, None, None, Quality::Bad(Reason::Exception(2)))
            }),
        ),
        (
            "sample_i64_uncertain",
            "demo-s5",
            Upstream::Sample(sample(
                "code",
                ValueType::I16,
                None,
                Some(Value::I64(-5)),
                Quality::Uncertain(Reason::SourceStatus(0x408f)),
            )),
        ),
        (
            "sample_u64",
            "demo-r6",
            Upstream::Sample(sample("speed", ValueType::U64, Some("rpm"), Some(Value::U64(u64::MAX)), Quality::Good)),
        ),
        (
            "sample_bool",
            "demo-r7",
            Upstream::Sample(sample("code", ValueType::Bool, None, Some(Value::Bool(true)), Quality::Good)),
        ),
        (
            "sample_text",
            "demo-r8",
            Upstream::Sample(sample(
                "code",
                ValueType::Text,
                None,
                Some(Value::Text("HP-400 \"Ö\"\n\u{1}".into())),
                Quality::Good,
            )),
        ),
        (
            "aggregate",
            "demo-a9",
            Upstream::Aggregate(AggregateRecord {
                path: path(&format!("{PRESS1}/speed")),
                unit: Some("rpm".into()),
                start: t("2026-11-28T12:00:00Z"),
                end: t("2026-11-28T12:01:00Z"),
                count: 600,
                min: Some(1470.5),
                max: Some(1490.25),
                avg: Some(1480.125),
                stddev: Some(3.5),
                first: Some(1471.0),
                last: Some(1489.0),
                twa: Some(1480.0),
            }),
        ),
        (
            "aggregate_empty",
            "demo-a10",
            Upstream::Aggregate(AggregateRecord {
                path: path(&format!("{PRESS1}/code")),
                unit: None,
                start: t("2026-11-28T12:00:00Z"),
                end: t("2026-11-28T12:01:00Z"),
                count: 0,
                min: None,
                max: None,
                avg: None,
                stddev: None,
                first: None,
                last: None,
                twa: None,
            }),
        ),
        (
            "production",
            "demo-a11",
            Upstream::Production(ProductionRecord {
                asset: path(PRESS1),
                start: t("2026-11-28T12:00:00Z"),
                end: t("2026-11-28T12:15:00Z"),
                parts: 100,
                shift_parts: 412,
            }),
        ),
        (
            "oee",
            "demo-a12",
            Upstream::Oee(OeeRecord {
                asset: press2.clone(),
                time: t("2026-11-28T12:15:00Z"),
                shift_start: t("2026-11-28T06:00:00Z"),
                availability: 0.9,
                performance: 0.851,
                quality: 0.995,
                oee: 0.7621,
                parts: 4120,
                rejects: 21,
                running_s: 26460.5,
            }),
        ),
        (
            "event",
            "demo-e13",
            Upstream::Event(EventRecord {
                time: t("2026-11-28T12:15:00Z"),
                asset: press2,
                kind: "performance_drop".into(),
                severity: Severity::Warning,
                state: Transition::Raised,
                message: "press2 performance down 5.1 % (85.1 % against 90.2 %)".into(),
                body: vec![("performance".into(), 0.851), ("baseline".into(), 0.902), ("drop_percent".into(), 5.1)],
            }),
        ),
        (
            "gap",
            "demo-e14",
            Upstream::Gap(GapRecord {
                time: t("2026-11-28T12:20:00Z"),
                class: "raw".into(),
                records: 1200,
                first_id: "r17".into(),
                last_id: "r1216".into(),
                from: t("2026-11-28T10:00:00Z"),
                to: t("2026-11-28T10:20:00Z"),
                cause: GapCause::Full,
            }),
        ),
        (
            "recovered",
            "demo-e15",
            Upstream::Recovered(RecoveryRecord { time: t("2026-11-28T12:20:00Z"), corrupt_records: 1, torn_bytes: 37 }),
        ),
        (
            "undecodable",
            "demo-r16",
            Upstream::Undecodable(UndecodableRecord {
                time: t("2026-11-28T12:20:00Z"),
                record_id: "r16".into(),
                why: "format version 9 is not known to this version of airlock".into(),
            }),
        ),
    ]
}
