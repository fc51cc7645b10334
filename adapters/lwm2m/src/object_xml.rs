//! OMA LwM2M object definition XML (the `LWM2M.xsd` schema used by the OMA
//! registry and by every object published there) into [`ObjectDef`]s.
//!
//! quick-xml is used as a pull parser: the schema is flat and small, and a
//! stack of element names is all the structure needed.

use std::collections::BTreeMap;

use quick_xml::Reader;
use quick_xml::events::Event;

use crate::registry::{ObjectDef, Operations, ResourceDef};
use crate::value::ResourceType;

#[derive(Default)]
struct ObjectDraft {
    name: Option<String>,
    id: Option<u16>,
    version: Option<String>,
    multiple: bool,
    mandatory: bool,
    resources: BTreeMap<u16, ResourceDef>,
}

#[derive(Default)]
struct ItemDraft {
    id: Option<u16>,
    name: Option<String>,
    operations: Operations,
    multiple: bool,
    mandatory: bool,
    ty: Option<ResourceType>,
    units: Option<String>,
    range: Option<(f64, f64)>,
    description: Option<String>,
}

/// Parse one XML document; it may define several objects.
pub fn parse(text: &str) -> Result<Vec<ObjectDef>, String> {
    let mut reader = Reader::from_str(text);
    let mut stack: Vec<String> = Vec::new();
    let mut text_buf = String::new();
    let mut objects = Vec::new();
    let mut object: Option<ObjectDraft> = None;
    let mut item: Option<ItemDraft> = None;
    loop {
        let at = reader.buffer_position();
        let event = reader
            .read_event()
            .map_err(|e| format!("XML error at byte {at}: {e}"))?;
        match event {
            Event::Start(e) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                match name.as_str() {
                    "Object" => object = Some(ObjectDraft::default()),
                    "Item" if stack.last().is_some_and(|p| p == "Resources") => {
                        let id = e
                            .try_get_attribute("ID")
                            .map_err(|e| format!("bad attribute: {e}"))?
                            .ok_or("resource <Item> without ID attribute")?;
                        let id = id.unescape_value().map_err(|e| format!("bad ID: {e}"))?;
                        let id = id
                            .trim()
                            .parse::<u16>()
                            .map_err(|_| format!("resource ID `{id}` is not a 16-bit id"))?;
                        item = Some(ItemDraft {
                            id: Some(id),
                            ..ItemDraft::default()
                        });
                    }
                    _ => {}
                }
                stack.push(name);
                text_buf.clear();
            }
            Event::Text(t) => {
                text_buf.push_str(&t.decode().map_err(|e| format!("bad text: {e}"))?);
            }
            Event::CData(t) => {
                text_buf.push_str(&t.decode().map_err(|e| format!("bad text: {e}"))?);
            }
            Event::GeneralRef(r) => {
                if let Some(c) = r
                    .resolve_char_ref()
                    .map_err(|e| format!("bad reference: {e}"))?
                {
                    text_buf.push(c);
                } else {
                    let name = r.decode().map_err(|e| format!("bad reference: {e}"))?;
                    let resolved = quick_xml::escape::resolve_predefined_entity(&name)
                        .ok_or_else(|| format!("unknown entity `&{name};`"))?;
                    text_buf.push_str(resolved);
                }
            }
            Event::End(_) => {
                let name = stack.pop().unwrap_or_default();
                let parent = stack.last().map(String::as_str);
                let value = std::mem::take(&mut text_buf);
                let value = value.trim();
                match (parent, name.as_str()) {
                    (Some("Item"), field) => {
                        if let Some(it) = item.as_mut() {
                            item_field(it, field, value)?;
                        }
                    }
                    (_, "Item") => {
                        if let (Some(it), Some(obj)) = (item.take(), object.as_mut()) {
                            let def = finish_item(it)?;
                            obj.resources.insert(def.id, def);
                        }
                    }
                    (Some("Object"), field) => {
                        if let Some(obj) = object.as_mut() {
                            object_field(obj, field, value)?;
                        }
                    }
                    (_, "Object") => {
                        if let Some(obj) = object.take() {
                            objects.push(finish_object(obj)?);
                        }
                    }
                    _ => {}
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if objects.is_empty() {
        return Err("no <Object> definition found".to_string());
    }
    Ok(objects)
}

fn multiple(value: &str) -> bool {
    value.eq_ignore_ascii_case("multiple")
}

fn object_field(obj: &mut ObjectDraft, field: &str, value: &str) -> Result<(), String> {
    match field {
        "Name" => obj.name = Some(value.to_string()),
        "ObjectID" => {
            obj.id = Some(
                value
                    .parse()
                    .map_err(|_| format!("ObjectID `{value}` is not a 16-bit id"))?,
            );
        }
        "ObjectVersion" if !value.is_empty() => obj.version = Some(value.to_string()),
        "MultipleInstances" => obj.multiple = multiple(value),
        "Mandatory" => obj.mandatory = value.eq_ignore_ascii_case("mandatory"),
        _ => {}
    }
    Ok(())
}

fn item_field(item: &mut ItemDraft, field: &str, value: &str) -> Result<(), String> {
    let id = item.id.unwrap_or_default();
    match field {
        "Name" => item.name = Some(value.to_string()),
        "Operations" => {
            item.operations = Operations::parse(value)
                .ok_or_else(|| format!("resource {id}: unknown operations `{value}`"))?;
        }
        "MultipleInstances" => item.multiple = multiple(value),
        "Mandatory" => item.mandatory = value.eq_ignore_ascii_case("mandatory"),
        "Type" => {
            item.ty = Some(
                ResourceType::from_xml(value)
                    .ok_or_else(|| format!("resource {id}: unknown type `{value}`"))?,
            );
        }
        "Units" if !value.is_empty() => item.units = Some(value.to_string()),
        "RangeEnumeration" => item.range = parse_range(value),
        "Description" if !value.is_empty() => item.description = Some(value.to_string()),
        _ => {}
    }
    Ok(())
}

fn finish_item(item: ItemDraft) -> Result<ResourceDef, String> {
    let id = item.id.unwrap_or_default();
    Ok(ResourceDef {
        id,
        name: item
            .name
            .ok_or_else(|| format!("resource {id} has no <Name>"))?,
        operations: item.operations,
        multiple: item.multiple,
        mandatory: item.mandatory,
        // executable resources usually have an empty <Type/>
        ty: item.ty.unwrap_or(ResourceType::None),
        units: item.units,
        range: item.range,
        description: item.description,
    })
}

fn finish_object(obj: ObjectDraft) -> Result<ObjectDef, String> {
    let id = obj.id.ok_or("an <Object> has no <ObjectID>")?;
    Ok(ObjectDef {
        id,
        name: obj
            .name
            .ok_or_else(|| format!("object {id} has no <Name>"))?,
        version: obj.version.unwrap_or_else(|| "1.0".to_string()),
        multiple: obj.multiple,
        mandatory: obj.mandatory,
        resources: obj.resources,
    })
}

/// A numeric `RangeEnumeration` such as `0..100`, `-40..85` or `0-255`;
/// enumerations and text ranges give `None`.
fn parse_range(text: &str) -> Option<(f64, f64)> {
    let (a, b) = text.split_once("..").or_else(|| {
        // `a-b`, where a may itself be negative
        let start = usize::from(text.starts_with('-'));
        text.get(start..)?.find('-').map(|i| {
            (
                text.get(..start + i).unwrap_or(""),
                text.get(start + i + 1..).unwrap_or(""),
            )
        })
    })?;
    let (a, b) = (a.trim().parse::<f64>().ok()?, b.trim().parse::<f64>().ok()?);
    (a.is_finite() && b.is_finite() && a <= b).then_some((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const WATER_METER: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<LWM2M xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:noNamespaceSchemaLocation="http://openmobilealliance.org/tech/profiles/LWM2M.xsd">
  <Object ObjectType="MODefinition">
    <Name>Water Meter</Name>
    <Description1><![CDATA[Water meter & flow]]></Description1>
    <ObjectID>3424</ObjectID>
    <ObjectURN>urn:oma:lwm2m:ext:3424</ObjectURN>
    <LWM2MVersion>1.0</LWM2MVersion>
    <ObjectVersion>1.1</ObjectVersion>
    <MultipleInstances>Multiple</MultipleInstances>
    <Mandatory>Optional</Mandatory>
    <Resources>
      <Item ID="1">
        <Name>Cumulated water volume</Name>
        <Operations>R</Operations>
        <MultipleInstances>Single</MultipleInstances>
        <Mandatory>Mandatory</Mandatory>
        <Type>Float</Type>
        <RangeEnumeration></RangeEnumeration>
        <Units>m3</Units>
        <Description><![CDATA[volume &amp; more]]></Description>
      </Item>
      <Item ID="3">
        <Name>Type of meter</Name>
        <Operations>RW</Operations>
        <MultipleInstances>Single</MultipleInstances>
        <Mandatory>Optional</Mandatory>
        <Type>Integer</Type>
        <RangeEnumeration>-1..5</RangeEnumeration>
        <Units></Units>
        <Description>Kind &amp; model</Description>
      </Item>
      <Item ID="6">
        <Name>Reset</Name>
        <Operations>E</Operations>
        <MultipleInstances>Single</MultipleInstances>
        <Mandatory>Optional</Mandatory>
        <Type></Type>
        <RangeEnumeration></RangeEnumeration>
        <Units></Units>
        <Description></Description>
      </Item>
    </Resources>
    <Description2></Description2>
  </Object>
</LWM2M>"#;

    #[test]
    fn parses_an_oma_object_file() {
        let objs = parse(WATER_METER).unwrap();
        assert_eq!(objs.len(), 1);
        let o = &objs[0];
        assert_eq!(
            (o.id, o.name.as_str(), o.version.as_str(), o.multiple),
            (3424, "Water Meter", "1.1", true)
        );
        let r1 = &o.resources[&1];
        assert_eq!(r1.ty, ResourceType::Float);
        assert_eq!(r1.units.as_deref(), Some("m3"));
        assert!(r1.operations.read && !r1.operations.write && r1.mandatory);
        let r3 = &o.resources[&3];
        assert_eq!(r3.range, Some((-1.0, 5.0)));
        assert_eq!(r3.description.as_deref(), Some("Kind & model"));
        assert_eq!(o.resources[&6].ty, ResourceType::None);
        assert!(o.resources[&6].operations.execute);
    }

    #[test]
    fn broken_files_are_errors_with_a_reason() {
        assert!(
            parse("<LWM2M><Object><Name>x</Name></Object></LWM2M>")
                .unwrap_err()
                .contains("ObjectID")
        );
        assert!(
            parse("<LWM2M></LWM2M>")
                .unwrap_err()
                .contains("no <Object>")
        );
        assert!(parse("<LWM2M><Object><ObjectID>99999</ObjectID></Object></LWM2M>").is_err());
        assert!(parse("<LWM2M><Object><ObjectID>5</ObjectID><Resources><Item><Name>a</Name></Item></Resources></Object></LWM2M>").unwrap_err().contains("without ID"));
        assert!(
            parse("<LWM2M><Object>").is_err()
                || parse("<LWM2M><Object>")
                    .unwrap_err()
                    .contains("no <Object>")
        );
        assert!(parse("<a></b>").is_err());
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("0..100"), Some((0.0, 100.0)));
        assert_eq!(parse_range("-40-85"), Some((-40.0, 85.0)));
        assert_eq!(parse_range("0-255"), Some((0.0, 255.0)));
        assert_eq!(parse_range("1,2,3"), None);
        assert_eq!(parse_range("5..1"), None);
    }
}
