//! The northbound path: JSON codec and topics, the durable outbox, and the MQTT session.
