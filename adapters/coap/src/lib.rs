//! ferrogate-coap (work in progress).
