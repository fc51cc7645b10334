//! ferrogate-lwm2m (work in progress).
