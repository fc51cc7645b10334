//! ferrogate-modbus (work in progress).
