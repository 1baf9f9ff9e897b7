//! The domain: validated events from the hooks API and the other seed systems, and the
//! participant timeline they fold into. No I/O.

/// `as_str`, `parse` and `ALL` of the vocabulary's enums, from their strum derives: each
/// word is spelled once, in its enum's `serialize_all` (which matches its serde spelling,
/// see `the_stores_and_the_wire_spell_every_word_alike`).
macro_rules! spelled {
    ($($word:ty),* $(,)?) => {$(
        impl $word {
            pub const ALL: &'static [Self] = <Self as strum::VariantArray>::VARIANTS;

            pub fn as_str(self) -> &'static str {
                self.into()
            }

            pub fn parse(text: &str) -> Option<Self> {
                text.parse().ok()
            }
        }
    )*};
}

pub mod append;
pub mod idempotency;
pub mod ingest;
pub mod sources;
pub mod stats;
pub mod timeline;
pub mod timestamp;
pub mod types;
pub mod vocabulary;

pub use append::{
    AppendPlan, HopChange, ParticipantRow, PresentStint, StintRow, Stored, StoredParticipant,
    Summary, needs_interaction, plan_append, present_needed,
};
pub use ingest::{Action, BodyError, ConversationId, Event, FieldError, IngestBatch};
pub use timeline::Timeline;
pub use types::{EventName, Experience, Participant, TransferType, Transition};
pub use vocabulary::{
    Anomaly, ExitType, Hop, HopKind, HopOutcome, ParticipantTimeline, Status, Stint, Transfers,
};
