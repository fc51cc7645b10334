//! Sparkplug topics: `spBv1.0/{group_id}/{message_type}/{edge_node_id}[/{device_id}]`
//! and the primary host's `spBv1.0/STATE/{host_id}`, and the one mapping
//! of a ferrogate device name to a Sparkplug device id.
//!
//! Sparkplug forbids `+`, `#` and `/` in ids. Device names from a
//! configuration may hold them, so a device id is the name with `%`, `+`,
//! `#` and `/` written as `%25`, `%2B`, `%23`, `%2F` (percent-encoding of
//! exactly those four): reversible, and every other name is its own id.
//! Group, edge node and host ids are checked when the configuration is
//! loaded ([`check_id`]) and never escaped.

use std::borrow::Cow;

/// The Sparkplug B topic namespace.
pub const NAMESPACE: &str = "spBv1.0";

/// Message types of an edge node and its devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    NBirth,
    NDeath,
    NData,
    NCmd,
    DBirth,
    DDeath,
    DData,
    DCmd,
}

impl MessageType {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::NBirth => "NBIRTH",
            MessageType::NDeath => "NDEATH",
            MessageType::NData => "NDATA",
            MessageType::NCmd => "NCMD",
            MessageType::DBirth => "DBIRTH",
            MessageType::DDeath => "DDEATH",
            MessageType::DData => "DDATA",
            MessageType::DCmd => "DCMD",
        }
    }
}

/// Why a configured id cannot be a Sparkplug topic level.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("empty")]
    Empty,
    #[error("`{0}` is not allowed in a Sparkplug id (no `+`, `#`, `/`)")]
    Character(char),
}

/// Checks a group, edge node or host id.
pub fn check_id(id: &str) -> Result<(), IdError> {
    if id.is_empty() {
        return Err(IdError::Empty);
    }
    match id
        .chars()
        .find(|c| matches!(c, '+' | '#' | '/') || c.is_control())
    {
        Some(c) => Err(IdError::Character(c)),
        None => Ok(()),
    }
}

/// The Sparkplug device id of a ferrogate device name.
pub fn device_id(name: &str) -> Cow<'_, str> {
    if !name.contains(['%', '+', '#', '/']) {
        return Cow::Borrowed(name);
    }
    let mut id = String::with_capacity(name.len() + 8);
    for c in name.chars() {
        match c {
            '%' => id.push_str("%25"),
            '+' => id.push_str("%2B"),
            '#' => id.push_str("%23"),
            '/' => id.push_str("%2F"),
            c => id.push(c),
        }
    }
    Cow::Owned(id)
}

/// The ferrogate device name of a Sparkplug device id; `None` for an id
/// [`device_id`] never produces (a bare `%`, an unknown escape).
pub fn device_name(id: &str) -> Option<Cow<'_, str>> {
    if !id.contains('%') {
        return (!id.contains(['+', '#', '/'])).then_some(Cow::Borrowed(id));
    }
    let mut name = String::with_capacity(id.len());
    let mut rest = id;
    while let Some(at) = rest.find('%') {
        name.push_str(&rest[..at]);
        let escape = rest.get(at..at + 3)?;
        name.push(match escape {
            "%25" => '%',
            "%2B" => '+',
            "%23" => '#',
            "%2F" => '/',
            _ => return None,
        });
        rest = &rest[at + 3..];
    }
    name.push_str(rest);
    Some(Cow::Owned(name))
}

/// What a message received on the node's command subscriptions is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandTopic {
    Node,
    Device(String),
}

/// The topics of one edge node.
#[derive(Debug, Clone)]
pub struct Topics {
    group_id: String,
    edge_node_id: String,
}

impl Topics {
    /// Ids checked with [`check_id`].
    pub fn new(group_id: &str, edge_node_id: &str) -> Topics {
        Topics {
            group_id: group_id.to_string(),
            edge_node_id: edge_node_id.to_string(),
        }
    }

    /// An edge node message (NBIRTH, NDEATH, NDATA, NCMD).
    pub fn node(&self, kind: MessageType) -> String {
        format!(
            "{NAMESPACE}/{}/{}/{}",
            self.group_id,
            kind.as_str(),
            self.edge_node_id
        )
    }

    /// A device message (DBIRTH, DDEATH, DDATA, DCMD) for a device name.
    pub fn device(&self, kind: MessageType, device: &str) -> String {
        format!(
            "{NAMESPACE}/{}/{}/{}/{}",
            self.group_id,
            kind.as_str(),
            self.edge_node_id,
            device_id(device)
        )
    }

    /// The subscription for every device's commands.
    pub fn device_commands(&self) -> String {
        format!("{NAMESPACE}/{}/DCMD/{}/+", self.group_id, self.edge_node_id)
    }

    /// What a command topic addresses: the node, a device (by ferrogate
    /// name), or `None` for a topic that is not this node's NCMD/DCMD.
    pub fn command(&self, topic: &str) -> Option<CommandTopic> {
        let mut levels = topic.split('/');
        if levels.next() != Some(NAMESPACE) || levels.next() != Some(self.group_id.as_str()) {
            return None;
        }
        let kind = levels.next()?;
        if levels.next() != Some(self.edge_node_id.as_str()) {
            return None;
        }
        match (kind, levels.next(), levels.next()) {
            ("NCMD", None, _) => Some(CommandTopic::Node),
            ("DCMD", Some(id), None) => Some(CommandTopic::Device(device_name(id)?.into_owned())),
            _ => None,
        }
    }
}

/// The primary host application's state topic (Sparkplug 3.0).
pub fn host_state(host_id: &str) -> String {
    format!("{NAMESPACE}/STATE/{host_id}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn topics_are_as_the_specification_spells_them() {
        let t = Topics::new("plant", "gw-1");
        assert_eq!(t.node(MessageType::NBirth), "spBv1.0/plant/NBIRTH/gw-1");
        assert_eq!(
            t.device(MessageType::DData, "meter/7+a#"),
            "spBv1.0/plant/DDATA/gw-1/meter%2F7%2Ba%23"
        );
        assert_eq!(t.device_commands(), "spBv1.0/plant/DCMD/gw-1/+");
        assert_eq!(host_state("scada"), "spBv1.0/STATE/scada");
        assert_eq!(
            t.command("spBv1.0/plant/NCMD/gw-1"),
            Some(CommandTopic::Node)
        );
        assert_eq!(
            t.command("spBv1.0/plant/DCMD/gw-1/meter%2F7"),
            Some(CommandTopic::Device("meter/7".into()))
        );
        for other in [
            "spBv1.0/plant/NCMD/gw-2",
            "spBv1.0/other/NCMD/gw-1",
            "spBv1.0/plant/DCMD/gw-1",
            "spBv1.0/plant/DCMD/gw-1/a/b",
            "spBv1.0/plant/DCMD/gw-1/bad%zz",
            "spBv1.0/plant/NDATA/gw-1",
        ] {
            assert_eq!(t.command(other), None, "{other}");
        }
    }

    #[test]
    fn configured_ids_are_checked() {
        assert_eq!(check_id("plant-1"), Ok(()));
        assert_eq!(check_id(""), Err(IdError::Empty));
        assert_eq!(check_id("a/b"), Err(IdError::Character('/')));
        assert_eq!(check_id("a+"), Err(IdError::Character('+')));
    }

    proptest! {
        #[test]
        fn any_device_name_maps_to_an_id_and_back(name in "\\PC{1,30}") {
            let id = device_id(&name);
            prop_assert!(!id.contains(['+', '#', '/']));
            let back = device_name(&id);
            prop_assert_eq!(back.as_deref(), Some(name.as_str()));
        }

        #[test]
        fn any_id_decodes_or_is_refused(id in "\\PC{0,30}") {
            if let Some(name) = device_name(&id) {
                prop_assert_eq!(device_id(&name), id.as_str());
            }
        }
    }
}
