//! Device-management operations (Core 1.1 §5.4): how a gateway command
//! becomes CoAP requests to a client, and how a client's answer becomes the
//! command's outcome. Pure functions; the server sends and tracks.

use std::collections::BTreeMap;

use ferrogate_coap::{Code, Method, Request, Response};
use ferrogate_sdk::{CommandError, ErrorCode, Operation, Value};

use crate::content::{self, ContentFormat};
use crate::link::Link;
use crate::path::Path;
use crate::registry::{ObjectRegistry, PointNaming, WriteRefusal};
use crate::value::ResourceValue;

/// What one request of a command is for, so its answer can be read.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Values come back (read, observe, composite read).
    Read { path: Path },
    /// A composite read of several paths (FETCH, 1.1).
    Composite,
    /// A write of these values; confirmed by 2.04.
    Write { confirmed: Vec<(String, Value)> },
    /// Execute, write-attributes, delete: only the code matters.
    Acknowledge,
    /// Discover: link-format comes back.
    Discover,
    /// Create: the new instance's location comes back.
    Create,
}

/// One CoAP request of a command.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub request: Request,
    pub step: Step,
    /// Register an observation rather than send a one-off request.
    pub observe: bool,
    /// The Accept the request carries, for falling back on 4.06.
    pub accept: Option<ContentFormat>,
}

/// A command that needs no request: cancel-observe of a path.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    Requests(Vec<Planned>),
    CancelObserve(Path),
}

/// What the planner needs to know about the client.
pub struct ClientView<'a> {
    pub registry: &'a ObjectRegistry,
    pub naming: PointNaming,
    /// The format to ask for in reads and to write in (multi-value).
    pub format: ContentFormat,
    /// Whether the client speaks LwM2M 1.1 or later (composite operations).
    pub composite: bool,
    /// The client's object instances, for a read of every point.
    pub instances: Vec<Path>,
}

fn bad(message: impl Into<String>) -> CommandError {
    CommandError::new(ErrorCode::BadRequest, message)
}

fn refusal(r: WriteRefusal) -> CommandError {
    let code = match r {
        WriteRefusal::NotWritable { .. } => ErrorCode::NotWritable,
        WriteRefusal::InvalidValue { .. } => ErrorCode::InvalidValue,
        WriteRefusal::OutOfRange { .. } => ErrorCode::OutOfRange,
    };
    CommandError::new(code, r.to_string())
}

fn get(path: Path, format: ContentFormat, observe: bool) -> Planned {
    Planned {
        request: Request::get(&path.to_string()).with_accept(format.number()),
        step: Step::Read { path },
        observe,
        accept: Some(format),
    }
}

/// What a read or write names: a path of any depth (`/3`, `/3/0`,
/// `3303/0/5700`), whatever the point naming, or a point name.
pub fn point_target(registry: &ObjectRegistry, point: &str) -> Result<Path, CommandError> {
    let path_shaped = point.contains('/') && point.bytes().all(|b| b.is_ascii_digit() || b == b'/');
    if !path_shaped {
        return registry.point_path(point).ok_or_else(|| {
            CommandError::new(
                ErrorCode::UnknownPoint,
                format!("no LwM2M resource is named `{point}`"),
            )
        });
    }
    match Path::parse(point) {
        Ok(path) if path.depth() >= 1 => Ok(path),
        Ok(_) => Err(bad("name an object, an instance or a resource, not `/`")),
        Err(e) => Err(bad(e.to_string())),
    }
}

fn command_path(path: &Option<String>) -> Result<Path, CommandError> {
    let text = path
        .as_deref()
        .ok_or_else(|| bad("this operation needs a `path`"))?;
    Path::parse(text).map_err(|e| bad(e.to_string()))
}

/// The format a single-resource write goes in: text for 1.0 clients keeps
/// to what every client supports; multi-value formats otherwise.
fn write_format(client: &ClientView<'_>, values: &[(Path, ResourceValue)]) -> ContentFormat {
    match (client.format, values) {
        (ContentFormat::SenmlJson | ContentFormat::SenmlCbor, _) => client.format,
        (_, [(_, ResourceValue::Opaque(_))]) => ContentFormat::Opaque,
        _ => ContentFormat::Tlv,
    }
}

fn write_request(
    method: Method,
    base: Path,
    values: &[(Path, ResourceValue)],
    format: ContentFormat,
) -> Result<Request, CommandError> {
    let payload = content::encode(format, base, values).map_err(|e| bad(e.to_string()))?;
    Ok(Request::new(method, &base.to_string()).with_payload(format.number(), payload))
}

/// Plan the requests of a command for a client.
pub fn plan(op: &Operation, client: &ClientView<'_>) -> Result<Plan, CommandError> {
    match op {
        Operation::Read { points } => {
            let paths: Vec<Path> = if points.is_empty() {
                client
                    .instances
                    .iter()
                    .copied()
                    .filter(|p| p.object() != Some(0) && p.depth() == 2)
                    .collect()
            } else {
                points
                    .iter()
                    .map(|p| point_target(client.registry, p))
                    .collect::<Result<_, _>>()?
            };
            if paths.is_empty() {
                return Err(bad("the client has no object instances to read"));
            }
            Ok(Plan::Requests(read_plan(client, &paths)?))
        }
        Operation::Write { values } => {
            let mut planned = Vec::with_capacity(values.len());
            for (point, value) in values {
                let path = point_target(client.registry, point)?;
                if path.depth() < 3 {
                    return Err(bad(format!("`{point}` is not a resource")));
                }
                let typed = client.registry.check_write(&path, value).map_err(refusal)?;
                let values = [(path, typed)];
                let format = write_format(client, &values);
                planned.push(Planned {
                    request: write_request(Method::Put, path, &values, format)?,
                    step: Step::Write {
                        confirmed: vec![(point.clone(), value.clone())],
                    },
                    observe: false,
                    accept: None,
                });
            }
            Ok(Plan::Requests(planned))
        }
        Operation::Protocol {
            op,
            path,
            value,
            args,
        } => protocol(op, path, value.as_ref(), args, client),
    }
}

fn read_plan(client: &ClientView<'_>, paths: &[Path]) -> Result<Vec<Planned>, CommandError> {
    if client.composite
        && paths.len() > 1
        && matches!(
            client.format,
            ContentFormat::SenmlJson | ContentFormat::SenmlCbor
        )
    {
        let body = content::encode_paths(client.format, paths).map_err(|e| bad(e.to_string()))?;
        let mut request =
            Request::new(Method::Fetch, "/").with_payload(client.format.number(), body);
        request.accept = Some(client.format.number());
        return Ok(vec![Planned {
            request,
            step: Step::Composite,
            observe: false,
            accept: Some(client.format),
        }]);
    }
    Ok(paths
        .iter()
        .map(|p| get(*p, client.format, false))
        .collect())
}

fn protocol(
    op: &str,
    path: &Option<String>,
    value: Option<&serde_json::Value>,
    args: &serde_json::Value,
    client: &ClientView<'_>,
) -> Result<Plan, CommandError> {
    let one = |planned: Planned| Ok(Plan::Requests(vec![planned]));
    match op {
        "observe" => {
            let p = command_path(path)?;
            one(get(p, client.format, true))
        }
        "cancel-observe" => Ok(Plan::CancelObserve(command_path(path)?)),
        "discover" => {
            let p = command_path(path)?;
            one(Planned {
                request: Request::get(&p.to_string())
                    .with_accept(ContentFormat::LinkFormat.number()),
                step: Step::Discover,
                observe: false,
                accept: None,
            })
        }
        "execute" => {
            let p = command_path(path)?;
            if p.depth() != 3 {
                return Err(bad(
                    "execute needs a resource path /object/instance/resource",
                ));
            }
            let mut request = Request::post(&p.to_string());
            let arguments = execute_arguments(args)?;
            if !arguments.is_empty() {
                request =
                    request.with_payload(ContentFormat::Text.number(), arguments.into_bytes());
            }
            one(Planned {
                request,
                step: Step::Acknowledge,
                observe: false,
                accept: None,
            })
        }
        "write" => {
            let p = command_path(path)?;
            let value = value.ok_or_else(|| bad("write needs a `value`"))?;
            let values = write_values(client, p, value, false)?;
            let partial = match args.get("mode").and_then(|m| m.as_str()) {
                None | Some("replace") => false,
                Some("partial") => true,
                Some(other) => {
                    return Err(bad(format!(
                        "unknown write mode `{other}`: use replace or partial"
                    )));
                }
            };
            let format = write_format(client, &values);
            let method = if partial { Method::Post } else { Method::Put };
            let confirmed = values
                .iter()
                .map(|(path, v)| {
                    (
                        client.registry.point_name(path, client.naming),
                        v.to_model(),
                    )
                })
                .collect();
            one(Planned {
                request: write_request(method, p, &values, format)?,
                step: Step::Write { confirmed },
                observe: false,
                accept: None,
            })
        }
        "write-attr" => {
            let p = command_path(path)?;
            let mut request = Request::put(&p.to_string());
            let serde_json::Value::Object(attrs) = args else {
                return Err(bad(
                    "write-attr needs `args` such as {\"pmin\": 10, \"pmax\": 60}",
                ));
            };
            if attrs.is_empty() {
                return Err(bad("write-attr needs at least one attribute"));
            }
            for (k, v) in attrs {
                if !matches!(
                    k.as_str(),
                    "pmin"
                        | "pmax"
                        | "gt"
                        | "lt"
                        | "st"
                        | "epmin"
                        | "epmax"
                        | "edge"
                        | "con"
                        | "hqmax"
                ) {
                    return Err(bad(format!(
                        "unknown attribute `{k}`: use pmin, pmax, gt, lt or st"
                    )));
                }
                match v {
                    serde_json::Value::Null => request.query.push(k.clone()),
                    serde_json::Value::Number(n) => request.query.push(format!("{k}={n}")),
                    _ => {
                        return Err(bad(format!(
                            "attribute `{k}` must be a number (or null to remove it)"
                        )));
                    }
                }
            }
            one(Planned {
                request,
                step: Step::Acknowledge,
                observe: false,
                accept: None,
            })
        }
        "create" => {
            let p = command_path(path)?;
            if p.depth() != 1 {
                return Err(bad("create needs an object path such as /3303"));
            }
            let value =
                value.ok_or_else(|| bad("create needs a `value`: the new instance's resources"))?;
            let instance = match args.get("instance") {
                None | Some(serde_json::Value::Null) => None,
                Some(v) => Some(
                    v.as_u64()
                        .and_then(|i| u16::try_from(i).ok())
                        .filter(|i| *i != u16::MAX)
                        .ok_or_else(|| bad("`instance` must be an id"))?,
                ),
            };
            // without an instance id the client picks one; TLV then carries
            // the resources at the top level (Core 1.1 §5.4.5)
            let base = p
                .child(instance.unwrap_or(0))
                .ok_or_else(|| bad("bad instance"))?;
            let values = write_values(client, base, value, true)?;
            let (format, encode_base) = match instance {
                Some(_) => (write_format(client, &values), p),
                None => (ContentFormat::Tlv, base),
            };
            let payload =
                content::encode(format, encode_base, &values).map_err(|e| bad(e.to_string()))?;
            one(Planned {
                request: Request::post(&p.to_string()).with_payload(format.number(), payload),
                step: Step::Create,
                observe: false,
                accept: None,
            })
        }
        "delete" => {
            let p = command_path(path)?;
            if p.depth() != 2 {
                return Err(bad("delete needs an object instance path such as /3303/1"));
            }
            one(Planned {
                request: Request::delete(&p.to_string()),
                step: Step::Acknowledge,
                observe: false,
                accept: None,
            })
        }
        other => Err(bad(format!(
            "unknown LwM2M operation `{other}`: use read, write, execute, discover, observe, cancel-observe, write-attr, create or delete"
        ))),
    }
}

/// The values of a write: a scalar for a resource path, or an object of
/// resource ids (or `res/inst` paths) below an instance path.
fn write_values(
    client: &ClientView<'_>,
    base: Path,
    value: &serde_json::Value,
    create: bool,
) -> Result<Vec<(Path, ResourceValue)>, CommandError> {
    let check = |path: Path, v: &serde_json::Value| {
        let model = Value::from_json(v).ok_or_else(|| {
            CommandError::new(
                ErrorCode::InvalidValue,
                format!("{path}: {v} is not a single value"),
            )
        })?;
        let typed = if create {
            client.registry.typed_value(&path, &model)
        } else {
            client.registry.check_write(&path, &model)
        };
        typed.map_err(refusal).map(|t| (path, t))
    };
    match value {
        serde_json::Value::Object(map) => {
            if base.depth() != 2 {
                return Err(bad(
                    "an object value is written to an instance path /object/instance",
                ));
            }
            map.iter()
                .map(|(k, v)| {
                    let rel = Path::parse(k).map_err(|e| bad(e.to_string()))?;
                    let mut ids = base.ids().to_vec();
                    ids.extend_from_slice(rel.ids());
                    let path = Path::new(&ids)
                        .filter(|p| p.depth() >= 3)
                        .ok_or_else(|| bad(format!("`{k}` is not a resource id")))?;
                    check(path, v)
                })
                .collect()
        }
        v if base.depth() >= 3 => Ok(vec![check(base, v)?]),
        _ => Err(bad(
            "a single value is written to a resource path /object/instance/resource",
        )),
    }
}

/// Execute arguments (Core 1.1 §5.4.4): a string as given, or an object
/// `{"0": "on", "1": null}` as `0='on',1`.
fn execute_arguments(args: &serde_json::Value) -> Result<String, CommandError> {
    match args {
        serde_json::Value::Null => Ok(String::new()),
        serde_json::Value::String(s) => Ok(s.clone()),
        serde_json::Value::Object(map) => {
            let mut parts = Vec::new();
            for (k, v) in map {
                if k.len() != 1 || !k.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad(format!("execute argument `{k}` must be a digit 0-9")));
                }
                match v {
                    serde_json::Value::Null => parts.push(k.clone()),
                    serde_json::Value::String(s) if !s.contains('\'') => {
                        parts.push(format!("{k}='{s}'"))
                    }
                    serde_json::Value::Number(n) => parts.push(format!("{k}='{n}'")),
                    _ => {
                        return Err(bad(format!(
                            "execute argument `{k}` must be a string without quotes, a number or null"
                        )));
                    }
                }
            }
            Ok(parts.join(","))
        }
        _ => Err(bad(
            "execute `args` must be a string or an object of digit keys",
        )),
    }
}

/// The error a client's 4.xx/5.xx answer stands for.
pub fn code_error(code: Code, step: &Step) -> CommandError {
    let text = format!("client answered {code}");
    let code_kind = match (code, step) {
        (Code::NOT_FOUND, _) => ErrorCode::UnknownPoint,
        (Code::METHOD_NOT_ALLOWED, Step::Write { .. }) => ErrorCode::NotWritable,
        _ => ErrorCode::DeviceException,
    };
    CommandError::new(code_kind, text)
}

/// Read what a successful response means for the command: the values it
/// contributes.
pub fn outcome(
    step: &Step,
    response: &Response,
    client: &ClientView<'_>,
) -> Result<BTreeMap<String, Value>, CommandError> {
    let decode_err = |e: String| {
        CommandError::new(
            ErrorCode::DeviceException,
            format!("cannot decode the client's answer: {e}"),
        )
    };
    match step {
        Step::Read { path } => {
            let format = response_format(response, Some(client.format))?;
            let values = content::decode(format, *path, &response.payload, client.registry)
                .map_err(|e| decode_err(e.to_string()))?;
            Ok(named(values, client))
        }
        Step::Composite => {
            let format = response_format(response, Some(client.format))?;
            let values = content::decode(format, Path::ROOT, &response.payload, client.registry)
                .map_err(|e| decode_err(e.to_string()))?;
            Ok(named(values, client))
        }
        Step::Write { confirmed } => Ok(confirmed.iter().cloned().collect()),
        Step::Acknowledge => Ok(BTreeMap::new()),
        Step::Discover => {
            let links =
                Link::parse_all(&response.payload).map_err(|e| decode_err(e.to_string()))?;
            Ok(links
                .into_iter()
                .map(|l| {
                    let attrs = Link {
                        target: String::new(),
                        params: l.params.clone(),
                    }
                    .to_string();
                    (
                        l.target,
                        Value::String(
                            attrs
                                .trim_start_matches("<>;")
                                .trim_start_matches("<>")
                                .to_string(),
                        ),
                    )
                })
                .collect())
        }
        Step::Create => {
            let location = format!("/{}", response.location_path.join("/"));
            Ok(BTreeMap::from([(
                "location".to_string(),
                Value::String(location),
            )]))
        }
    }
}

/// The content format of a response payload: its option, or the format
/// asked for, or TLV (what clients send when nothing was asked).
pub fn response_format(
    response: &Response,
    asked: Option<ContentFormat>,
) -> Result<ContentFormat, CommandError> {
    match response.content_format {
        Some(n) => ContentFormat::from_number(n).ok_or_else(|| {
            CommandError::new(
                ErrorCode::DeviceException,
                format!("client answered in unsupported content format {n}"),
            )
        }),
        None => Ok(asked.unwrap_or(ContentFormat::Tlv)),
    }
}

fn named(values: Vec<content::PathValue>, client: &ClientView<'_>) -> BTreeMap<String, Value> {
    values
        .into_iter()
        .map(|v| {
            (
                client.registry.point_name(&v.path, client.naming),
                v.value.to_model(),
            )
        })
        .collect()
}

/// The format to try after a client refused `format` with 4.06.
pub fn fallback(format: ContentFormat) -> Option<ContentFormat> {
    match format {
        ContentFormat::SenmlCbor => Some(ContentFormat::SenmlJson),
        ContentFormat::SenmlJson => Some(ContentFormat::Tlv),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn view(reg: &ObjectRegistry, format: ContentFormat) -> ClientView<'_> {
        ClientView {
            registry: reg,
            naming: PointNaming::Registry,
            format,
            composite: true,
            instances: vec![
                Path::parse("/3/0").unwrap(),
                Path::parse("/3303/0").unwrap(),
            ],
        }
    }

    fn protocol_op(
        op: &str,
        path: &str,
        value: Option<serde_json::Value>,
        args: serde_json::Value,
    ) -> Operation {
        Operation::Protocol {
            op: op.into(),
            path: Some(path.into()),
            value,
            args,
        }
    }

    fn single(plan: Plan) -> Planned {
        match plan {
            Plan::Requests(mut r) if r.len() == 1 => r.remove(0),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn writes_are_validated_and_encoded() {
        let reg = ObjectRegistry::builtin();
        let v = view(&reg, ContentFormat::Tlv);
        let op = Operation::Write {
            values: BTreeMap::from([("light_control.dimmer".to_string(), Value::Int(40))]),
        };
        let p = single(plan(&op, &v).unwrap());
        assert_eq!(p.request.method, Method::Put);
        assert_eq!(p.request.path, ["3311", "0", "5851"]);
        assert_eq!(p.request.payload, [0xe1, 0x16, 0xdb, 40]);
        let bad_value = Operation::Write {
            values: BTreeMap::from([(
                "device.manufacturer".to_string(),
                Value::String("x".into()),
            )]),
        };
        assert_eq!(
            plan(&bad_value, &v).unwrap_err().code,
            ErrorCode::NotWritable
        );
        let unknown = Operation::Write {
            values: BTreeMap::from([("nope".to_string(), Value::Int(1))]),
        };
        assert_eq!(
            plan(&unknown, &v).unwrap_err().code,
            ErrorCode::UnknownPoint
        );
    }

    #[test]
    fn protocol_operations() {
        let reg = ObjectRegistry::builtin();
        let v = view(&reg, ContentFormat::SenmlJson);
        let exec = single(
            plan(
                &protocol_op("execute", "/3/0/4", None, json!({"0": "now", "1": null})),
                &v,
            )
            .unwrap(),
        );
        assert_eq!(exec.request.method, Method::Post);
        assert_eq!(exec.request.payload, b"0='now',1");
        let attrs = single(
            plan(
                &protocol_op(
                    "write-attr",
                    "/3303/0/5700",
                    None,
                    json!({"pmin": 1, "pmax": 5, "st": 0.5}),
                ),
                &v,
            )
            .unwrap(),
        );
        assert_eq!(attrs.request.query, ["pmax=5", "pmin=1", "st=0.5"]);
        assert!(
            plan(
                &protocol_op("write-attr", "/3/0/9", None, json!({"foo": 1})),
                &v
            )
            .is_err()
        );
        let write = single(
            plan(
                &protocol_op(
                    "write",
                    "/3311/0",
                    Some(json!({"5850": true, "5851": 20})),
                    json!({"mode": "partial"}),
                ),
                &v,
            )
            .unwrap(),
        );
        assert_eq!(write.request.method, Method::Post);
        assert_eq!(write.request.content_format, Some(110));
        let create = single(
            plan(
                &protocol_op(
                    "create",
                    "/3303",
                    Some(json!({"5750": "kitchen"})),
                    json!({"instance": 4}),
                ),
                &v,
            )
            .unwrap(),
        );
        assert_eq!(create.request.path, ["3303"]);
        assert!(
            String::from_utf8(create.request.payload)
                .unwrap()
                .contains("/3303/4/5750")
        );
        assert!(plan(&protocol_op("delete", "/3303", None, json!(null)), &v).is_err());
        assert!(plan(&protocol_op("fly", "/3", None, json!(null)), &v).is_err());
        assert_eq!(
            plan(
                &protocol_op("cancel-observe", "/3/0/9", None, json!(null)),
                &v
            )
            .unwrap(),
            Plan::CancelObserve(Path::parse("/3/0/9").unwrap())
        );
        let read = Operation::Read {
            points: vec!["temperature".into(), "device.battery_level".into()],
        };
        let composite = single(plan(&read, &v).unwrap());
        assert_eq!(composite.request.method, Method::Fetch);
        assert_eq!(composite.step, Step::Composite);
    }

    #[test]
    fn discover_answers_become_values() {
        let reg = ObjectRegistry::builtin();
        let v = view(&reg, ContentFormat::Tlv);
        let response = Response::new(Code::CONTENT)
            .with_payload(40, b"</3/0>,</3/0/9>;pmin=1;pmax=5".to_vec());
        let values = outcome(&Step::Discover, &response, &v).unwrap();
        assert_eq!(
            values.get("/3/0/9"),
            Some(&Value::String("pmin=1;pmax=5".into()))
        );
        assert_eq!(values.get("/3/0"), Some(&Value::String(String::new())));
    }

    #[test]
    fn reads_and_writes_name_paths_whatever_the_naming() {
        let reg = ObjectRegistry::builtin();
        let v = view(&reg, ContentFormat::Tlv);
        for (point, path) in [
            ("/3/0", "/3/0"),
            ("/3/0/0", "/3/0/0"),
            ("3303/0/5700", "/3303/0/5700"),
            ("/3", "/3"),
        ] {
            let read = Operation::Read {
                points: vec![point.into()],
            };
            let p = single(plan(&read, &v).unwrap());
            assert_eq!(p.request.method, Method::Get, "{point}");
            assert_eq!(
                p.step,
                Step::Read {
                    path: Path::parse(path).unwrap()
                }
            );
        }
        let root = Operation::Read {
            points: vec!["/".into()],
        };
        assert_eq!(plan(&root, &v).unwrap_err().code, ErrorCode::BadRequest);
        let write = Operation::Write {
            values: BTreeMap::from([("/1/0/1".to_string(), Value::Int(120))]),
        };
        let p = single(plan(&write, &v).unwrap());
        assert_eq!(p.request.method, Method::Put);
        assert_eq!(p.request.path, ["1", "0", "1"]);
        let instance = Operation::Write {
            values: BTreeMap::from([("/1/0".to_string(), Value::Int(120))]),
        };
        assert_eq!(plan(&instance, &v).unwrap_err().code, ErrorCode::BadRequest);
    }
}
