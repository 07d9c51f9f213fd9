//! Per-client limits on `/events`: who the client is ([`client_ip`]: the peer, or the
//! address a trusted proxy reports), how many streams it holds and how fast it may ask
//! for new ones ([`per_ip`]). The per-gateway caps (`MAX_CONNECTIONS`, `MAX_TOPICS`) live
//! with what they count (`connection`, `hub`).

pub mod client_ip;
pub mod per_ip;
