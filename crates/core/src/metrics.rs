//! CloudWatch Embedded Metric Format: one JSON line on stdout per batch (and per vault
//! service request), from which CloudWatch makes metrics without any API call. Namespace
//! `login-etl`, dimension `Function` (and `Reason` for rejections by reason). The format
//! is a small documented JSON schema, so it is written here rather than through a global
//! metrics recorder that would need flushing per invocation.

/// The namespace of every metric.
pub const NAMESPACE: &str = "login-etl";

/// One metric of a line: name, value, CloudWatch unit.
pub type Metric<'a> = (&'a str, f64, &'a str);

/// One EMF line with `dimensions` (name, value) and `metrics`, at `timestamp_ms`.
pub fn line(dimensions: &[(&str, &str)], metrics: &[Metric<'_>], timestamp_ms: i64) -> String {
    let mut object = serde_json::Map::new();
    object.insert(
        "_aws".into(),
        serde_json::json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [dimensions.iter().map(|(name, _)| *name).collect::<Vec<_>>()],
                "Metrics": metrics.iter().map(|(name, _, unit)| serde_json::json!({"Name": name, "Unit": unit})).collect::<Vec<_>>(),
            }],
        }),
    );
    for (name, value) in dimensions {
        object.insert((*name).into(), serde_json::Value::from(*value));
    }
    for (name, value, _) in metrics {
        object.insert((*name).into(), serde_json::Value::from(*value));
    }
    serde_json::Value::Object(object).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_names_its_metrics_and_carries_their_values() {
        let text = line(
            &[("Function", "login-etl")],
            &[("Written", 99.0, "Count"), ("BatchDuration", 4.5, "Milliseconds")],
            7,
        );
        let value: serde_json::Value = serde_json::from_str(&text).expect("json");
        let directive = &value["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "login-etl");
        assert_eq!(directive["Dimensions"][0][0], "Function");
        assert_eq!(directive["Metrics"][1]["Unit"], "Milliseconds");
        assert_eq!((value["Function"].as_str(), value["Written"].as_f64()), (Some("login-etl"), Some(99.0)));
        assert_eq!(value["_aws"]["Timestamp"], 7);
    }
}
