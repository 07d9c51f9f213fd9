//! The Streamgate janitor: removes dead instances' state and trims stale streams.
//! Not built yet (issue 5).
