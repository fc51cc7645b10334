//! The object registry: what each object and resource is (name, type,
//! single/multiple, operations, units), from the built-in core and IPSO
//! definitions and from OMA object XML files. Used to type TLV and text
//! values, to name points, and to refuse writes the model forbids before
//! they reach a device.

use std::collections::BTreeMap;
use std::path::{Path as FsPath, PathBuf};

use crate::path::Path;
use crate::value::{ResourceType, ResourceValue};

/// What may be done with a resource (the `<Operations>` element).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Operations {
    pub read: bool,
    pub write: bool,
    pub execute: bool,
}

impl Operations {
    /// `"R"`, `"RW"`, `"W"`, `"E"` or `""` (no operation).
    pub fn parse(text: &str) -> Option<Operations> {
        let mut ops = Operations::default();
        for c in text.trim().chars() {
            match c.to_ascii_uppercase() {
                'R' => ops.read = true,
                'W' => ops.write = true,
                'E' => ops.execute = true,
                _ => return None,
            }
        }
        Some(ops)
    }
}

/// One resource of an object.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceDef {
    pub id: u16,
    pub name: String,
    pub operations: Operations,
    pub multiple: bool,
    pub mandatory: bool,
    pub ty: ResourceType,
    pub units: Option<String>,
    /// Inclusive numeric range from `<RangeEnumeration>`, when numeric.
    pub range: Option<(f64, f64)>,
    pub description: Option<String>,
}

/// One object: its id, name, and resources.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectDef {
    pub id: u16,
    pub name: String,
    pub version: String,
    pub multiple: bool,
    pub mandatory: bool,
    pub resources: BTreeMap<u16, ResourceDef>,
}

/// How telemetry points are named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PointNaming {
    /// From object and resource names: `temperature`, `temperature_1`,
    /// `device.battery_level`, `device.power_source_voltage.1`.
    #[default]
    Registry,
    /// The path without its leading slash: `3303/0/5700`.
    Path,
}

/// Why a write is refused before it is sent.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WriteRefusal {
    #[error("{path}: resource is not writable")]
    NotWritable { path: Path },
    #[error("{path}: {reason}")]
    InvalidValue { path: Path, reason: String },
    #[error("{path}: {value} is outside {min}..{max}")]
    OutOfRange {
        path: Path,
        value: f64,
        min: f64,
        max: f64,
    },
}

/// An object XML file that could not be loaded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}: {reason}")]
pub struct RegistryError {
    pub file: PathBuf,
    pub reason: String,
}

/// Resources that are a sensor object's own value, named after the object
/// alone (`temperature` rather than `temperature.sensor_value`).
const PRIMARY_RESOURCES: [u16; 1] = [5700];

/// Every known object definition. Cheap to share behind an `Arc`.
#[derive(Debug, Clone, Default)]
pub struct ObjectRegistry {
    objects: BTreeMap<u16, ObjectDef>,
    by_point_name: BTreeMap<String, u16>,
}

impl ObjectRegistry {
    /// The core objects 0–7 and the common IPSO objects.
    pub fn builtin() -> ObjectRegistry {
        let mut reg = ObjectRegistry::default();
        for obj in crate::builtin::objects() {
            reg.insert(obj);
        }
        reg
    }

    /// Add or replace an object definition.
    pub fn insert(&mut self, object: ObjectDef) {
        if let Some(old) = self.objects.get(&object.id) {
            self.by_point_name.remove(&snake(&old.name));
        }
        self.by_point_name.insert(snake(&object.name), object.id);
        self.objects.insert(object.id, object);
    }

    /// Load every `*.xml` file in `dir` (sorted by file name, later files
    /// replace earlier definitions of the same object). Files that fail are
    /// reported; the others are loaded.
    pub fn load_dir(&mut self, dir: &FsPath) -> Result<Vec<u16>, Vec<RegistryError>> {
        let entries = std::fs::read_dir(dir).map_err(|e| {
            vec![RegistryError {
                file: dir.to_path_buf(),
                reason: format!("cannot read directory: {e}"),
            }]
        })?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case("xml")))
            .collect();
        files.sort();
        let mut loaded = Vec::new();
        let mut errors = Vec::new();
        for file in files {
            let result = std::fs::read_to_string(&file)
                .map_err(|e| format!("cannot read: {e}"))
                .and_then(|text| crate::object_xml::parse(&text));
            match result {
                Ok(objects) => {
                    for o in objects {
                        loaded.push(o.id);
                        self.insert(o);
                    }
                }
                Err(reason) => errors.push(RegistryError { file, reason }),
            }
        }
        if errors.is_empty() {
            Ok(loaded)
        } else {
            Err(errors)
        }
    }

    /// Load the objects defined in one OMA object XML document.
    pub fn load_xml(&mut self, text: &str) -> Result<Vec<u16>, String> {
        let objects = crate::object_xml::parse(text)?;
        let ids = objects.iter().map(|o| o.id).collect();
        for o in objects {
            self.insert(o);
        }
        Ok(ids)
    }

    pub fn object(&self, id: u16) -> Option<&ObjectDef> {
        self.objects.get(&id)
    }

    pub fn objects(&self) -> impl Iterator<Item = &ObjectDef> {
        self.objects.values()
    }

    /// The definition of the resource a path names (or lies in).
    pub fn resource(&self, path: &Path) -> Option<&ResourceDef> {
        self.objects
            .get(&path.object()?)?
            .resources
            .get(&path.resource()?)
    }

    /// The declared type of a resource, if known.
    pub fn resource_type(&self, path: &Path) -> Option<ResourceType> {
        self.resource(path).map(|r| r.ty)
    }

    /// The point name of a resource or resource instance path.
    pub fn point_name(&self, path: &Path, naming: PointNaming) -> String {
        let by_path = || path.to_string().trim_start_matches('/').to_string();
        if naming == PointNaming::Path {
            return by_path();
        }
        let (Some(obj), Some(inst), Some(res)) = (path.object(), path.instance(), path.resource())
        else {
            return by_path();
        };
        let (Some(object), Some(resource)) = (self.object(obj), self.resource(path)) else {
            return by_path();
        };
        let mut name = snake(&object.name);
        if inst != 0 {
            name.push_str(&format!("_{inst}"));
        }
        if !PRIMARY_RESOURCES.contains(&res) || path.resource_instance().is_some() {
            name.push('.');
            name.push_str(&snake(&resource.name));
        }
        if let Some(ri) = path.resource_instance() {
            name.push_str(&format!(".{ri}"));
        }
        name
    }

    /// The path a point name stands for: the inverse of [`point_name`]
    /// (either naming), so commands may name points either way.
    ///
    /// [`point_name`]: ObjectRegistry::point_name
    pub fn point_path(&self, name: &str) -> Option<Path> {
        if name.bytes().all(|b| b.is_ascii_digit() || b == b'/') {
            return Path::parse(name).ok().filter(|p| p.depth() >= 3);
        }
        let mut parts = name.split('.');
        let head = parts.next()?;
        let (obj_name, inst) = match head.rsplit_once('_') {
            Some((o, i))
                if !i.is_empty()
                    && i.bytes().all(|b| b.is_ascii_digit())
                    && self.by_point_name.contains_key(o) =>
            {
                (o, i.parse().ok()?)
            }
            _ => (head, 0),
        };
        let obj = *self.by_point_name.get(obj_name)?;
        let object = self.object(obj)?;
        let res = match parts.next() {
            None => PRIMARY_RESOURCES
                .iter()
                .copied()
                .find(|r| object.resources.contains_key(r))?,
            Some(res_name) => {
                object
                    .resources
                    .values()
                    .find(|r| snake(&r.name) == res_name)?
                    .id
            }
        };
        let mut ids = vec![obj, inst, res];
        if let Some(ri) = parts.next() {
            ids.push(ri.parse().ok()?);
        }
        if parts.next().is_some() {
            return None;
        }
        Path::new(&ids)
    }

    /// Check a write against the model: the resource must be writable
    /// (unknown resources are let through to the device), the value must fit
    /// its type and range. Returns the typed value to encode.
    pub fn check_write(
        &self,
        path: &Path,
        value: &ferrogate_sdk::Value,
    ) -> Result<ResourceValue, WriteRefusal> {
        if self.resource(path).is_some_and(|def| !def.operations.write) {
            return Err(WriteRefusal::NotWritable { path: *path });
        }
        self.typed_value(path, value)
    }

    /// A value typed and range-checked for a resource, without the
    /// writability check: Create may set resources that are read-only.
    pub fn typed_value(
        &self,
        path: &Path,
        value: &ferrogate_sdk::Value,
    ) -> Result<ResourceValue, WriteRefusal> {
        let Some(def) = self.resource(path) else {
            return Ok(untyped(value));
        };
        let typed = ResourceValue::from_model(value, def.ty).map_err(|reason| {
            WriteRefusal::InvalidValue {
                path: *path,
                reason,
            }
        })?;
        if let (Some((min, max)), Some(v)) = (def.range, typed.to_model().as_f64())
            && (v < min || v > max)
        {
            return Err(WriteRefusal::OutOfRange {
                path: *path,
                value: v,
                min,
                max,
            });
        }
        Ok(typed)
    }
}

/// A value for a resource the registry does not know, typed by its form.
fn untyped(value: &ferrogate_sdk::Value) -> ResourceValue {
    use ferrogate_sdk::Value as V;
    match value {
        V::Bool(b) => ResourceValue::Boolean(*b),
        V::Int(i) => ResourceValue::Integer(*i),
        V::UInt(u) => ResourceValue::Unsigned(*u),
        V::Float(f) => ResourceValue::Float(*f),
        V::String(s) => ResourceValue::String(s.clone()),
        V::Bytes(b) => ResourceValue::Opaque(b.clone()),
    }
}

/// `"Light Control"` → `light_control`, `"On/Off"` → `on_off`.
pub fn snake(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut pending_sep = false;
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            if pending_sep && !out.is_empty() {
                out.push('_');
            }
            pending_sep = false;
            out.push(c.to_ascii_lowercase());
        } else {
            pending_sep = true;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrogate_sdk::Value;

    fn p(s: &str) -> Path {
        Path::parse(s).unwrap()
    }

    #[test]
    fn points_are_named_from_the_model_and_back() {
        let reg = ObjectRegistry::builtin();
        let cases = [
            ("/3303/0/5700", "temperature"),
            ("/3303/1/5700", "temperature_1"),
            ("/3303/0/5601", "temperature.min_measured_value"),
            ("/3/0/9", "device.battery_level"),
            ("/3/0/7/1", "device.power_source_voltage.1"),
            ("/3311/0/5850", "light_control.on_off"),
            ("/31024/10/1", "31024/10/1"),
        ];
        for (path, name) in cases {
            assert_eq!(reg.point_name(&p(path), PointNaming::Registry), name);
            assert_eq!(reg.point_path(name), Some(p(path)), "{name}");
        }
        assert_eq!(
            reg.point_name(&p("/3303/0/5700"), PointNaming::Path),
            "3303/0/5700"
        );
        assert_eq!(reg.point_path("no_such_thing"), None);
        assert_eq!(reg.point_path("3303"), None);
    }

    #[test]
    fn writes_are_checked_against_the_model() {
        let reg = ObjectRegistry::builtin();
        assert_eq!(
            reg.check_write(&p("/1/0/1"), &Value::Int(3600)),
            Ok(ResourceValue::Integer(3600))
        );
        assert!(matches!(
            reg.check_write(&p("/3/0/0"), &Value::String("x".into())),
            Err(WriteRefusal::NotWritable { .. })
        ));
        assert!(matches!(
            reg.check_write(&p("/3311/0/5850"), &Value::String("bright".into())),
            Err(WriteRefusal::InvalidValue { .. })
        ));
        assert!(matches!(
            reg.check_write(&p("/3311/0/5851"), &Value::Int(150)),
            Err(WriteRefusal::OutOfRange { .. })
        ));
        assert_eq!(
            reg.check_write(&p("/31024/10/1"), &Value::Int(2)),
            Ok(ResourceValue::Integer(2))
        );
    }

    #[test]
    fn snake_case() {
        assert_eq!(snake("LwM2M Server"), "lwm2m_server");
        assert_eq!(snake("On/Off"), "on_off");
        assert_eq!(snake(" Sensor  Value "), "sensor_value");
    }
}
