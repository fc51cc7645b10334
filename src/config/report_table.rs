//! The `[[report]]` table of `conf.d/`: report by exception for devices of
//! any adapter (CoAP, LwM2M, serial, the simulator; Modbus devices too,
//! over their own keys), checked with positions and handed to the adapter
//! that owns each device in its [`BuiltAdapter::policies`].

use ferrogate_sdk::BuiltAdapter;
use ferrogate_sdk::config::{ConfigDuration, ConfigIssue, Located, Node};
use ferrogate_sdk::report::{DevicePolicy, ReportKeys};
use ferrogate_sdk::transform::{Conversion, Transform};
use serde::Deserialize;
use serde::de::IgnoredAny;

/// The top-level key this module owns.
pub const KEY: &str = "report";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceEntry {
    device: String,
    report_on_change: Option<bool>,
    deadband: Option<f64>,
    deadband_percent: Option<f64>,
    span: Option<f64>,
    min_interval: Option<ConfigDuration>,
    max_interval: Option<ConfigDuration>,
    /// Parsed entry by entry, so each bad point has its own position.
    #[serde(default, rename = "point")]
    _points: IgnoredAny,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PointEntry {
    name: String,
    deadband: Option<f64>,
    deadband_percent: Option<f64>,
    span: Option<f64>,
    min_interval: Option<ConfigDuration>,
    max_interval: Option<ConfigDuration>,
    scale: Option<f64>,
    offset: Option<f64>,
    /// `"degC -> degF"`.
    convert: Option<String>,
    clamp_min: Option<f64>,
    clamp_max: Option<f64>,
}

impl PointEntry {
    /// The point's transform, checked.
    fn transform(
        &self,
        issues: &mut Vec<ConfigIssue>,
        origin: &ferrogate_sdk::config::Origin,
    ) -> Transform {
        let mut t = Transform::default();
        if let Some(scale) = self.scale {
            if scale == 0.0 || !scale.is_finite() {
                issues.push(origin.issue("scale", "`scale` must be a finite number other than 0"));
            }
            t.scale = scale;
        }
        if let Some(offset) = self.offset {
            if !offset.is_finite() {
                issues.push(origin.issue("offset", "`offset` must be finite"));
            }
            t.offset = offset;
        }
        if let Some(text) = &self.convert {
            match Conversion::parse(text) {
                Ok(c) => t.convert = Some(c),
                Err(e) => issues.push(origin.issue("convert", e)),
            }
        }
        for (key, v) in [("clamp_min", self.clamp_min), ("clamp_max", self.clamp_max)] {
            if v.is_some_and(|v| !v.is_finite()) {
                issues.push(origin.issue(key, format!("`{key}` must be finite")));
            }
        }
        if let (Some(lo), Some(hi)) = (self.clamp_min, self.clamp_max)
            && lo > hi
        {
            issues.push(origin.issue(
                "clamp_min",
                format!("`clamp_min` {lo} is greater than `clamp_max` {hi}"),
            ));
        }
        t.clamp_min = self.clamp_min;
        t.clamp_max = self.clamp_max;
        t
    }
}

fn keys(
    deadband: Option<f64>,
    deadband_percent: Option<f64>,
    span: Option<f64>,
    min: Option<ConfigDuration>,
    max: Option<ConfigDuration>,
) -> ReportKeys {
    ReportKeys {
        deadband,
        deadband_percent,
        span,
        min_interval: min.map(|d| d.0),
        max_interval: max.map(|d| d.0),
    }
}

/// Read every `[[report]]` entry of `roots` into the adapters owning the
/// devices (replacing what an adapter's own keys said for that device).
/// A device no adapter declares goes to the adapters whose devices appear
/// at run time (LwM2M endpoints, CoAP ingest names), with a note.
pub fn apply(
    roots: &[Node<'_>],
    adapters: &mut [BuiltAdapter],
    issues: &mut Vec<ConfigIssue>,
    notes: &mut Vec<String>,
) {
    let mut seen = std::collections::BTreeMap::new();
    for node in roots.iter().filter_map(|r| r.get(KEY)) {
        for entry in node.elements() {
            let Some((device, policy)) = device_policy(entry, issues) else {
                continue;
            };
            if let Some(first) = seen.insert(device.value.device.clone(), device.origin.entry()) {
                issues.push(
                    device
                        .origin
                        .issue(
                            "device",
                            format!("[[report]] for `{}` twice", device.device),
                        )
                        .with_hint(format!("the first is at {first}")),
                );
                continue;
            }
            let owner = adapters
                .iter()
                .position(|a| a.devices.iter().any(|(d, _)| *d == device.device));
            let targets: Vec<usize> = match owner {
                Some(i) => vec![i],
                None => {
                    let dynamic: Vec<usize> = adapters
                        .iter()
                        .enumerate()
                        .filter(|(_, a)| a.devices.is_empty())
                        .map(|(i, _)| i)
                        .collect();
                    notes.push(format!(
                        "[[report]] `{}`: no adapter declares this device; it applies if {} reports one of that name",
                        device.device,
                        if dynamic.is_empty() {
                            "an adapter".to_string()
                        } else {
                            dynamic
                                .iter()
                                .map(|&i| adapters[i].name.as_str())
                                .collect::<Vec<_>>()
                                .join(" or ")
                        }
                    ));
                    dynamic
                }
            };
            for i in targets {
                let adapter = &mut adapters[i];
                adapter
                    .policies
                    .insert(device.device.clone(), policy.clone());
                // A reload restarts the instance when its reporting changed.
                adapter.fingerprint ^= ferrogate_sdk::fingerprint(&(&device.device, &policy));
            }
        }
    }
}

fn device_policy(
    entry: Node<'_>,
    issues: &mut Vec<ConfigIssue>,
) -> Option<(Located<DeviceEntry>, DevicePolicy)> {
    let device = match entry.parse::<DeviceEntry>() {
        Ok(d) => d,
        Err(e) => {
            issues.push(e.with_hint(
                "a [[report]] entry has `device`, report keys and [[report.point]] entries",
            ));
            return None;
        }
    };
    let before = issues.len();
    let on_change = device.report_on_change.unwrap_or(false);
    let report = keys(
        device.deadband,
        device.deadband_percent,
        device.span,
        device.min_interval,
        device.max_interval,
    )
    .device(on_change)
    .unwrap_or_else(|errors| {
        issues.extend(errors.into_iter().map(|(k, m)| device.origin.issue(k, m)));
        Default::default()
    });
    let mut policy = DevicePolicy {
        report,
        ..DevicePolicy::default()
    };
    for point in entry.get("point").map(|p| p.elements()).unwrap_or_default() {
        let point = match point.parse::<PointEntry>() {
            Ok(p) => p,
            Err(e) => {
                issues.push(e);
                continue;
            }
        };
        let transform = point.transform(issues, &point.origin);
        if !transform.is_identity() {
            policy.transforms.insert(point.name.clone(), transform);
        }
        let overrides = keys(
            point.deadband,
            point.deadband_percent,
            point.span,
            point.min_interval,
            point.max_interval,
        )
        .point();
        match overrides {
            Ok(p) => {
                if policy.points.insert(point.name.clone(), p).is_some() {
                    issues.push(point.origin.issue(
                        "name",
                        format!(
                            "point `{}` is listed twice for `{}`",
                            point.name, device.device
                        ),
                    ));
                }
            }
            Err(errors) => {
                issues.extend(errors.into_iter().map(|(k, m)| point.origin.issue(k, m)));
            }
        }
    }
    if !on_change
        && (device.deadband.is_some()
            || device.deadband_percent.is_some()
            || device.max_interval.is_some())
    {
        issues.push(
            device
                .origin
                .issue(
                    "report_on_change",
                    format!(
                        "`{}` has a deadband or max_interval but not `report_on_change = true`",
                        device.device
                    ),
                )
                .with_hint("without it every reading is published; set it to filter"),
        );
    }
    (issues.len() == before).then_some((device, policy))
}
