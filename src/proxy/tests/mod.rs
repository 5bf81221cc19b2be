//! Tests of the proxy against real upstream servers and clients on loopback.
