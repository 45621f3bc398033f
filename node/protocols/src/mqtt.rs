//! Mqtt: not parsed yet. `detect` recognises nothing, so no socket reaches
//! `new_session`; the module is filled by its parser's change.

use crate::{ConversationConfig, Direction, Role, infer::Detection, session::ProtocolSession};

/// Recognises the start of a message of this protocol at the start of a chunk.
pub(crate) fn detect(_bytes: &[u8], _direction: Direction) -> Detection {
    Detection::NoMatch
}

/// The session of a socket this module's `detect` matched.
pub(crate) fn new_session(role: Role, config: &ConversationConfig) -> Box<dyn ProtocolSession> {
    // unreachable while `detect` matches nothing; replaced by the real codec
    Box::new(crate::conversation::Http1Session::new(role, config))
}
