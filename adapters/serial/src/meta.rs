//! What a serial device tells the runtime about itself: its points, its
//! writable commands, the operations it allows and its line settings.

use std::collections::BTreeMap;

use ferrogate_sdk::{DeviceMeta, PointMeta};

use crate::config::{Device, FlowControl, Mode, Parity};

pub fn device_meta(device: &Device) -> DeviceMeta {
    let mut points: Vec<PointMeta> = device
        .points
        .iter()
        .map(|p| PointMeta {
            name: p.name.clone(),
            data_type: p.ty.name().to_string(),
            unit: p.unit.clone(),
            writable: false,
            min: None,
            max: None,
            description: p.description.clone(),
            address: Some(p.source.clone()),
        })
        .collect();
    points.extend(device.commands.iter().map(|c| PointMeta {
        name: c.name.clone(),
        data_type: c.ty.name().to_string(),
        unit: c.unit.clone(),
        writable: true,
        min: c.min,
        max: c.max,
        description: c.description.clone(),
        address: None,
    }));
    let mut operations = vec!["read".to_string()];
    if !device.commands.is_empty() {
        operations.push("write".into());
    }
    if device.allow_raw_send {
        operations.push("send".into());
    }
    let port = &device.port;
    let mut attributes = BTreeMap::from([
        ("port".to_string(), port.path.clone().into()),
        ("baud".to_string(), port.baud.into()),
        ("data_bits".to_string(), port.data_bits.into()),
        (
            "parity".to_string(),
            match port.parity {
                Parity::None => "none",
                Parity::Even => "even",
                Parity::Odd => "odd",
            }
            .into(),
        ),
        ("stop_bits".to_string(), port.stop_bits.into()),
        (
            "flow_control".to_string(),
            match port.flow_control {
                FlowControl::None => "none",
                FlowControl::Software => "software",
                FlowControl::Hardware => "hardware",
            }
            .into(),
        ),
        ("framing".to_string(), device.framing.kind().into()),
        ("parser".to_string(), device.parser.kind().into()),
    ]);
    match &device.mode {
        Mode::FreeRunning => {
            attributes.insert("mode".into(), "free_running".into());
        }
        Mode::Poll { period, .. } => {
            attributes.insert("mode".into(), "poll".into());
            attributes.insert("poll_ms".into(), (period.as_millis() as u64).into());
        }
    }
    if let Some(d) = &device.description {
        attributes.insert("description".into(), d.clone().into());
    }
    DeviceMeta {
        device: device.name.clone(),
        points: points.into(),
        operations: Some(operations),
        attributes,
    }
}
