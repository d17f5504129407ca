//! Who a connection is, and how it proved it: TLS on the listeners
//! ([`tls`]), the SASL exchange before a SASL listener serves anything
//! else ([`sasl`]), and the [`Principal`] a connection acts as.

pub mod sasl;
pub mod tls;

use std::fmt;

/// Who a connection acts as, named as Kafka's ACLs name principals
/// (`User:alice`). A connection that did not authenticate is
/// `User:ANONYMOUS`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Principal {
    user: String,
}

impl Principal {
    pub fn anonymous() -> Principal {
        Principal::user("ANONYMOUS")
    }

    pub fn user(name: impl Into<String>) -> Principal {
        Principal { user: name.into() }
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "User:{}", self.user)
    }
}
