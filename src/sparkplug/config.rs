//! The `[sparkplug]` table of `gateway.toml`: whether the gateway is also a
//! Sparkplug B edge node, and which one.

use serde::Deserialize;

use super::topic::check_id;
use crate::north::config::{BrokerAddr, ConfigProblem};

/// `[sparkplug]`. Off unless `enabled = true`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SparkplugConfig {
    /// Publish the devices as a Sparkplug B edge node, next to the JSON
    /// contract. Default false.
    #[serde(default)]
    pub enabled: bool,
    /// The Sparkplug group id. Default `ferrogate`.
    #[serde(default = "default_group_id")]
    pub group_id: String,
    /// The edge node id; default the gateway id.
    #[serde(default)]
    pub edge_node_id: Option<String>,
    /// Publish only while this host application's
    /// `spBv1.0/STATE/{primary_host_id}` says online; hold data meanwhile.
    #[serde(default)]
    pub primary_host_id: Option<String>,
    /// Metric aliases in births, and only aliases in data messages.
    /// Default false.
    #[serde(default)]
    pub aliases: bool,
    /// Broker of the edge node's own session (`mqtt://host:port`); default
    /// the `[mqtt]` url.
    #[serde(default)]
    pub url: Option<String>,
    /// MQTT client id; default `ferrogate-spb-{gateway_id}`.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Telemetry messages held in memory while the node cannot publish
    /// (broker away, primary host offline); the oldest go first. Default
    /// 10000.
    #[serde(default = "default_hold_limit")]
    pub hold_limit: usize,
}

fn default_group_id() -> String {
    "ferrogate".into()
}

fn default_hold_limit() -> usize {
    10_000
}

impl Default for SparkplugConfig {
    fn default() -> Self {
        SparkplugConfig {
            enabled: false,
            group_id: default_group_id(),
            edge_node_id: None,
            primary_host_id: None,
            aliases: false,
            url: None,
            client_id: None,
            hold_limit: default_hold_limit(),
        }
    }
}

impl SparkplugConfig {
    /// Every problem, by field.
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        let ids = [
            ("group_id", Some(&self.group_id)),
            ("edge_node_id", self.edge_node_id.as_ref()),
            ("primary_host_id", self.primary_host_id.as_ref()),
        ];
        for (field, id) in ids {
            if let Some(Err(e)) = id.map(|id| check_id(id)) {
                problems.push(ConfigProblem {
                    field,
                    message: format!("invalid Sparkplug {field}: {e}"),
                });
            }
        }
        if let Some(url) = &self.url {
            match BrokerAddr::parse(url) {
                Err(e) => problems.push(ConfigProblem {
                    field: "url",
                    message: e,
                }),
                Ok(addr) if addr.tls => problems.push(ConfigProblem {
                    field: "url",
                    message: "the Sparkplug session has no TLS yet: use mqtt://".into(),
                }),
                Ok(_) => {}
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_url_are_checked() {
        let config = SparkplugConfig {
            group_id: "a/b".into(),
            primary_host_id: Some("".into()),
            url: Some("mqtts://h:8883".into()),
            ..SparkplugConfig::default()
        };
        let fields: Vec<_> = config.validate().into_iter().map(|p| p.field).collect();
        assert_eq!(fields, ["group_id", "primary_host_id", "url"]);
        assert!(SparkplugConfig::default().validate().is_empty());
    }
}

#[cfg(test)]
mod loading {
    #[test]
    fn a_bad_sparkplug_table_is_reported_at_its_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("gateway.toml"),
            "gateway_id = \"gw\"\n\n[sparkplug]\nenabled = true\ngroup_id = \"a/b\"\ncolour = 1\n",
        )
        .unwrap();
        let issues = crate::config::load(dir.path(), &crate::kinds::all()).unwrap_err();
        let text: Vec<String> = issues.iter().map(|i| i.to_string()).collect();
        assert!(
            text.iter()
                .any(|t| t.contains("gateway.toml:6:1") && t.contains("colour")),
            "{text:#?}"
        );
        std::fs::write(
            dir.path().join("gateway.toml"),
            "gateway_id = \"gw\"\n\n[sparkplug]\nenabled = true\ngroup_id = \"a/b\"\n",
        )
        .unwrap();
        let issues = crate::config::load(dir.path(), &crate::kinds::all()).unwrap_err();
        let text: Vec<String> = issues.iter().map(|i| i.to_string()).collect();
        assert!(
            text.iter()
                .any(|t| t.contains("gateway.toml:5:") && t.contains("invalid Sparkplug group_id")),
            "{text:#?}"
        );
    }
}
