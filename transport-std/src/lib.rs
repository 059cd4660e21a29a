//! Transport (thin for now).
