//! Built-in object definitions: the LwM2M core objects 0–7
//! (OMA-TS-LightweightM2M-Core 1.1 Appendix E) and the common IPSO Smart
//! Objects (3200–3350), so values are typed and named with no XML files.

use std::collections::BTreeMap;

use crate::registry::{ObjectDef, Operations, ResourceDef};
use crate::value::ResourceType as T;

/// A resource row: id, name, operations, multiple, type, units.
type Row = (u16, &'static str, &'static str, bool, T, &'static str);

const SECURITY: &[Row] = &[
    (0, "LWM2M Server URI", "", false, T::String, ""),
    (1, "Bootstrap-Server", "", false, T::Boolean, ""),
    (2, "Security Mode", "", false, T::Integer, ""),
    (3, "Public Key or Identity", "", false, T::Opaque, ""),
    (4, "Server Public Key", "", false, T::Opaque, ""),
    (5, "Secret Key", "", false, T::Opaque, ""),
    (6, "SMS Security Mode", "", false, T::Integer, ""),
    (7, "SMS Binding Key Parameters", "", false, T::Opaque, ""),
    (8, "SMS Binding Secret Key(s)", "", false, T::Opaque, ""),
    (9, "LwM2M Server SMS Number", "", false, T::String, ""),
    (10, "Short Server ID", "", false, T::Integer, ""),
    (11, "Client Hold Off Time", "", false, T::Integer, "s"),
    (
        12,
        "Bootstrap-Server Account Timeout",
        "",
        false,
        T::Integer,
        "s",
    ),
];

const SERVER: &[Row] = &[
    (0, "Short Server ID", "R", false, T::Integer, ""),
    (1, "Lifetime", "RW", false, T::Integer, "s"),
    (2, "Default Minimum Period", "RW", false, T::Integer, "s"),
    (3, "Default Maximum Period", "RW", false, T::Integer, "s"),
    (4, "Disable", "E", false, T::None, ""),
    (5, "Disable Timeout", "RW", false, T::Integer, "s"),
    (
        6,
        "Notification Storing When Disabled or Offline",
        "RW",
        false,
        T::Boolean,
        "",
    ),
    (7, "Binding", "RW", false, T::String, ""),
    (8, "Registration Update Trigger", "E", false, T::None, ""),
    (9, "Bootstrap-Request Trigger", "E", false, T::None, ""),
    (10, "APN Link", "RW", false, T::Objlnk, ""),
    (
        11,
        "TLS-DTLS Alert Code",
        "R",
        false,
        T::UnsignedInteger,
        "",
    ),
    (12, "Last Bootstrapped", "R", false, T::Time, ""),
    (
        13,
        "Registration Priority Order",
        "R",
        false,
        T::UnsignedInteger,
        "",
    ),
    (
        14,
        "Initial Registration Delay Timer",
        "RW",
        false,
        T::UnsignedInteger,
        "s",
    ),
    (
        15,
        "Registration Failure Block",
        "RW",
        false,
        T::Boolean,
        "",
    ),
    (
        16,
        "Bootstrap on Registration Failure",
        "RW",
        false,
        T::Boolean,
        "",
    ),
    (
        17,
        "Communication Retry Count",
        "RW",
        false,
        T::UnsignedInteger,
        "",
    ),
    (
        18,
        "Communication Retry Timer",
        "RW",
        false,
        T::UnsignedInteger,
        "s",
    ),
    (
        19,
        "Communication Sequence Delay Timer",
        "RW",
        false,
        T::UnsignedInteger,
        "s",
    ),
    (
        20,
        "Communication Sequence Retry Count",
        "RW",
        false,
        T::UnsignedInteger,
        "",
    ),
    (21, "Trigger", "RW", false, T::Boolean, ""),
    (22, "Preferred Transport", "RW", false, T::String, ""),
    (23, "Mute Send", "RW", false, T::Boolean, ""),
];

const ACCESS_CONTROL: &[Row] = &[
    (0, "Object ID", "R", false, T::Integer, ""),
    (1, "Object Instance ID", "R", false, T::Integer, ""),
    (2, "ACL", "RW", true, T::Integer, ""),
    (3, "Access Control Owner", "RW", false, T::Integer, ""),
];

const DEVICE: &[Row] = &[
    (0, "Manufacturer", "R", false, T::String, ""),
    (1, "Model Number", "R", false, T::String, ""),
    (2, "Serial Number", "R", false, T::String, ""),
    (3, "Firmware Version", "R", false, T::String, ""),
    (4, "Reboot", "E", false, T::None, ""),
    (5, "Factory Reset", "E", false, T::None, ""),
    (6, "Available Power Sources", "R", true, T::Integer, ""),
    (7, "Power Source Voltage", "R", true, T::Integer, "mV"),
    (8, "Power Source Current", "R", true, T::Integer, "mA"),
    (9, "Battery Level", "R", false, T::Integer, "%"),
    (10, "Memory Free", "R", false, T::Integer, "KB"),
    (11, "Error Code", "R", true, T::Integer, ""),
    (12, "Reset Error Code", "E", false, T::None, ""),
    (13, "Current Time", "RW", false, T::Time, ""),
    (14, "UTC Offset", "RW", false, T::String, ""),
    (15, "Timezone", "RW", false, T::String, ""),
    (16, "Supported Binding and Modes", "R", false, T::String, ""),
    (17, "Device Type", "R", false, T::String, ""),
    (18, "Hardware Version", "R", false, T::String, ""),
    (19, "Software Version", "R", false, T::String, ""),
    (20, "Battery Status", "R", false, T::Integer, ""),
    (21, "Memory Total", "R", false, T::Integer, "KB"),
    (22, "ExtDevInfo", "R", true, T::Objlnk, ""),
];

const CONNECTIVITY_MONITORING: &[Row] = &[
    (0, "Network Bearer", "R", false, T::Integer, ""),
    (1, "Available Network Bearer", "R", true, T::Integer, ""),
    (2, "Radio Signal Strength", "R", false, T::Integer, "dBm"),
    (3, "Link Quality", "R", false, T::Integer, ""),
    (4, "IP Addresses", "R", true, T::String, ""),
    (5, "Router IP Addresses", "R", true, T::String, ""),
    (6, "Link Utilization", "R", false, T::Integer, "%"),
    (7, "APN", "R", true, T::String, ""),
    (8, "Cell ID", "R", false, T::Integer, ""),
    (9, "SMNC", "R", false, T::Integer, ""),
    (10, "SMCC", "R", false, T::Integer, ""),
    (11, "SignalSNR", "R", false, T::Integer, "dB"),
    (12, "LAC", "R", false, T::Integer, ""),
];

const FIRMWARE_UPDATE: &[Row] = &[
    (0, "Package", "W", false, T::Opaque, ""),
    (1, "Package URI", "RW", false, T::String, ""),
    (2, "Update", "E", false, T::None, ""),
    (3, "State", "R", false, T::Integer, ""),
    (5, "Update Result", "R", false, T::Integer, ""),
    (6, "PkgName", "R", false, T::String, ""),
    (7, "PkgVersion", "R", false, T::String, ""),
    (
        8,
        "Firmware Update Protocol Support",
        "R",
        true,
        T::Integer,
        "",
    ),
    (
        9,
        "Firmware Update Delivery Method",
        "R",
        false,
        T::Integer,
        "",
    ),
];

const LOCATION: &[Row] = &[
    (0, "Latitude", "R", false, T::Float, "lat"),
    (1, "Longitude", "R", false, T::Float, "lon"),
    (2, "Altitude", "R", false, T::Float, "m"),
    (3, "Radius", "R", false, T::Float, "m"),
    (4, "Velocity", "R", false, T::Opaque, ""),
    (5, "Timestamp", "R", false, T::Time, ""),
    (6, "Speed", "R", false, T::Float, "m/s"),
];

const CONNECTIVITY_STATISTICS: &[Row] = &[
    (0, "SMS Tx Counter", "R", false, T::Integer, ""),
    (1, "SMS Rx Counter", "R", false, T::Integer, ""),
    (2, "Tx Data", "R", false, T::Integer, "KB"),
    (3, "Rx Data", "R", false, T::Integer, "KB"),
    (4, "Max Message Size", "R", false, T::Integer, "B"),
    (5, "Average Message Size", "R", false, T::Integer, "B"),
    (6, "Start", "E", false, T::None, ""),
    (7, "Stop", "E", false, T::None, ""),
    (8, "Collection Period", "RW", false, T::Integer, "s"),
];

/// Resources shared by the IPSO sensor objects (IPSO Smart Objects
/// Guideline, "Reusable Resources").
const SENSOR: &[Row] = &[
    (5700, "Sensor Value", "R", false, T::Float, ""),
    (5701, "Sensor Units", "R", false, T::String, ""),
    (5601, "Min Measured Value", "R", false, T::Float, ""),
    (5602, "Max Measured Value", "R", false, T::Float, ""),
    (5603, "Min Range Value", "R", false, T::Float, ""),
    (5604, "Max Range Value", "R", false, T::Float, ""),
    (
        5605,
        "Reset Min and Max Measured Values",
        "E",
        false,
        T::None,
        "",
    ),
    (5750, "Application Type", "RW", false, T::String, ""),
    (5518, "Timestamp", "R", false, T::Time, ""),
    (6050, "Fractional Timestamp", "R", false, T::Float, "s"),
    (5821, "Current Calibration", "RW", false, T::Float, ""),
];

const CONTROL: &[Row] = &[
    (5850, "On/Off", "RW", false, T::Boolean, ""),
    (5851, "Dimmer", "RW", false, T::Integer, "%"),
    (5852, "On Time", "RW", false, T::Integer, "s"),
    (5805, "Cumulative active power", "R", false, T::Float, "Wh"),
    (5820, "Power factor", "R", false, T::Float, ""),
    (5706, "Colour", "RW", false, T::String, ""),
    (5701, "Sensor Units", "R", false, T::String, ""),
    (5750, "Application Type", "RW", false, T::String, ""),
];

const DIGITAL_INPUT: &[Row] = &[
    (5500, "Digital Input State", "R", false, T::Boolean, ""),
    (5501, "Digital Input Counter", "R", false, T::Integer, ""),
    (5502, "Digital Input Polarity", "RW", false, T::Boolean, ""),
    (
        5503,
        "Digital Input Debounce",
        "RW",
        false,
        T::Integer,
        "ms",
    ),
    (5505, "Digital Input Counter Reset", "E", false, T::None, ""),
    (5750, "Application Type", "RW", false, T::String, ""),
    (5751, "Sensor Type", "R", false, T::String, ""),
];

const DIGITAL_OUTPUT: &[Row] = &[
    (5550, "Digital Output State", "RW", false, T::Boolean, ""),
    (5551, "Digital Output Polarity", "RW", false, T::Boolean, ""),
    (5750, "Application Type", "RW", false, T::String, ""),
];

const ANALOG_INPUT: &[Row] = &[
    (5600, "Analog Input Current Value", "R", false, T::Float, ""),
    (5601, "Min Measured Value", "R", false, T::Float, ""),
    (5602, "Max Measured Value", "R", false, T::Float, ""),
    (5603, "Min Range Value", "R", false, T::Float, ""),
    (5604, "Max Range Value", "R", false, T::Float, ""),
    (
        5605,
        "Reset Min and Max Measured Values",
        "E",
        false,
        T::None,
        "",
    ),
    (5750, "Application Type", "RW", false, T::String, ""),
    (5751, "Sensor Type", "R", false, T::String, ""),
];

const ANALOG_OUTPUT: &[Row] = &[
    (
        5650,
        "Analog Output Current Value",
        "RW",
        false,
        T::Float,
        "",
    ),
    (5603, "Min Range Value", "R", false, T::Float, ""),
    (5604, "Max Range Value", "R", false, T::Float, ""),
    (5750, "Application Type", "RW", false, T::String, ""),
];

const AXES: &[Row] = &[
    (5702, "X Value", "R", false, T::Float, ""),
    (5703, "Y Value", "R", false, T::Float, ""),
    (5704, "Z Value", "R", false, T::Float, ""),
    (5701, "Sensor Units", "R", false, T::String, ""),
    (5603, "Min Range Value", "R", false, T::Float, ""),
    (5604, "Max Range Value", "R", false, T::Float, ""),
];

const IPSO_LOCATION: &[Row] = &[
    (5514, "Latitude", "R", false, T::String, ""),
    (5515, "Longitude", "R", false, T::String, ""),
    (5516, "Uncertainty", "R", false, T::String, ""),
    (5705, "Compass Direction", "R", false, T::Float, "deg"),
    (5517, "Velocity", "R", false, T::Opaque, ""),
    (5518, "Timestamp", "R", false, T::Time, ""),
    (5750, "Application Type", "RW", false, T::String, ""),
];

const ENERGY: &[Row] = &[
    (5805, "Cumulative active power", "R", false, T::Float, "Wh"),
    (5822, "Reset Cumulative energy", "E", false, T::None, ""),
    (5701, "Sensor Units", "R", false, T::String, ""),
    (5750, "Application Type", "RW", false, T::String, ""),
];

const ON_OFF_SWITCH: &[Row] = &[
    (5500, "Digital Input State", "R", false, T::Boolean, ""),
    (5501, "Digital Input Counter", "R", false, T::Integer, ""),
    (5852, "On Time", "RW", false, T::Integer, "s"),
    (5854, "Off Time", "RW", false, T::Integer, "s"),
    (5750, "Application Type", "RW", false, T::String, ""),
];

const PUSH_BUTTON: &[Row] = &[
    (5500, "Digital Input State", "R", false, T::Boolean, ""),
    (5501, "Digital Input Counter", "R", false, T::Integer, ""),
    (5750, "Application Type", "RW", false, T::String, ""),
];

const MULTISTATE_SELECTOR: &[Row] = &[
    (5547, "Multi-state Input", "R", false, T::Integer, ""),
    (5750, "Application Type", "RW", false, T::String, ""),
];

/// IPSO sensor objects: id, name, unit of their Sensor Value.
const SENSORS: &[(u16, &str, &str)] = &[
    (3300, "Generic Sensor", ""),
    (3301, "Illuminance", "lx"),
    (3303, "Temperature", "Cel"),
    (3304, "Humidity", "%RH"),
    (3315, "Barometer", "hPa"),
    (3316, "Voltage", "V"),
    (3317, "Current", "A"),
    (3318, "Frequency", "Hz"),
    (3319, "Depth", "cm"),
    (3320, "Percentage", "%"),
    (3321, "Altitude", "m"),
    (3322, "Load", "kg"),
    (3323, "Pressure", "Pa"),
    (3324, "Loudness", "dB"),
    (3325, "Concentration", "ppm"),
    (3326, "Acidity", "pH"),
    (3327, "Conductivity", "S/m"),
    (3328, "Power", "W"),
    (3329, "Power Factor", ""),
    (3330, "Distance", "m"),
    (3346, "Rate", ""),
];

fn object(id: u16, name: &str, multiple: bool, mandatory: bool, rows: &[Row]) -> ObjectDef {
    let resources = rows
        .iter()
        .map(|&(rid, rname, ops, multi, ty, units)| {
            let range = match (id, rid) {
                (_, 5851) => Some((0.0, 100.0)),
                (3, 9) => Some((0.0, 100.0)),
                _ => None,
            };
            let def = ResourceDef {
                id: rid,
                name: rname.to_string(),
                operations: Operations::parse(ops).unwrap_or_default(),
                multiple: multi,
                mandatory: false,
                ty,
                units: (!units.is_empty()).then(|| units.to_string()),
                range,
                description: None,
            };
            (rid, def)
        })
        .collect::<BTreeMap<_, _>>();
    ObjectDef {
        id,
        name: name.to_string(),
        version: "1.0".to_string(),
        multiple,
        mandatory,
        resources,
    }
}

/// All built-in definitions.
pub fn objects() -> Vec<ObjectDef> {
    let mut out = vec![
        object(0, "LwM2M Security", true, true, SECURITY),
        object(1, "LwM2M Server", true, true, SERVER),
        object(2, "LwM2M Access Control", true, false, ACCESS_CONTROL),
        object(3, "Device", false, true, DEVICE),
        object(
            4,
            "Connectivity Monitoring",
            false,
            false,
            CONNECTIVITY_MONITORING,
        ),
        object(5, "Firmware Update", false, false, FIRMWARE_UPDATE),
        object(6, "Location", false, false, LOCATION),
        object(
            7,
            "Connectivity Statistics",
            false,
            false,
            CONNECTIVITY_STATISTICS,
        ),
        object(3200, "Digital Input", true, false, DIGITAL_INPUT),
        object(3201, "Digital Output", true, false, DIGITAL_OUTPUT),
        object(3202, "Analog Input", true, false, ANALOG_INPUT),
        object(3203, "Analog Output", true, false, ANALOG_OUTPUT),
        object(3306, "Actuation", true, false, CONTROL),
        object(3311, "Light Control", true, false, CONTROL),
        object(3312, "Power Control", true, false, CONTROL),
        object(3313, "Accelerometer", true, false, AXES),
        object(3314, "Magnetometer", true, false, AXES),
        object(3331, "Energy", true, false, ENERGY),
        object(3336, "Location", true, false, IPSO_LOCATION),
        object(3342, "On/Off switch", true, false, ON_OFF_SWITCH),
        object(3347, "Push button", true, false, PUSH_BUTTON),
        object(
            3348,
            "Multi-state Selector",
            true,
            false,
            MULTISTATE_SELECTOR,
        ),
    ];
    // 3336 shares the name "Location" with object 6; give it its own point
    // name so the two do not collide.
    if let Some(o) = out.iter_mut().find(|o| o.id == 3336) {
        o.name = "Geo Location".to_string();
    }
    for &(id, name, unit) in SENSORS {
        let mut o = object(id, name, true, false, SENSOR);
        for r in o.resources.values_mut() {
            if matches!(r.id, 5700 | 5601..=5604) && !unit.is_empty() {
                r.units = Some(unit.to_string());
            }
        }
        out.push(o);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_object_has_unique_ids_and_point_names() {
        let objs = objects();
        let mut ids: Vec<u16> = objs.iter().map(|o| o.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), objs.len());
        let mut names: Vec<String> = objs
            .iter()
            .map(|o| crate::registry::snake(&o.name))
            .collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), objs.len(), "object point names collide");
        for o in &objs {
            let mut rn: Vec<String> = o
                .resources
                .values()
                .map(|r| crate::registry::snake(&r.name))
                .collect();
            rn.sort();
            rn.dedup();
            assert_eq!(
                rn.len(),
                o.resources.len(),
                "resource names collide in {}",
                o.name
            );
        }
        assert!(ids.contains(&3303) && ids.contains(&3347) && ids.contains(&7));
    }
}
