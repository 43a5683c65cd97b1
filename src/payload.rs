//! Reissue request bodies: canonical JSON and its digest.
