//! Tests of the proxy against real upstream servers and clients on loopback.

mod access_log;
mod admin;
mod certificates;
mod harness;
mod headers;
mod inline;
mod lifecycle;
mod parking;
mod protocols;
mod replay;
mod routing;
mod streaming;
mod upstream;
