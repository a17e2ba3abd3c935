//! A read-only view of a call for the services that watch extensions (busy lamps, presence,
//! pickup): who calls whom, how far the call is, and the dialog identifiers of each leg.

use super::{Call, ForkState, LiveState};

/// One fork of a call, as watchers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForkView {
    /// The index of the fork in its call.
    pub index: usize,
    /// The Request-URI (a registered contact of an extension, or a destination outside).
    pub uri: String,
    /// The Call-ID of pasarela's dialog towards the target.
    pub call_id: String,
    /// pasarela's tag on that dialog.
    pub our_tag: String,
    /// The target's tag, once it sent one.
    pub their_tag: Option<String>,
    /// A provisional response with a tag came: it rings.
    pub ringing: bool,
    /// It answered the call.
    pub answered: bool,
    /// Still trying, ringing or answered (not failed or cancelled).
    pub live: bool,
}

/// A call in progress, as watchers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallView {
    pub id: u64,
    /// The caller's number (an extension, or the number of a caller from outside).
    pub caller: String,
    pub caller_name: Option<String>,
    /// The call came from outside the office (a trunk, a peer, the internet).
    pub from_outside: bool,
    /// What the caller dialled.
    pub callee: String,
    /// The route stage ringing or answered (`extension 101`).
    pub stage_label: String,
    pub state: LiveState,
    /// The Call-ID of the caller's leg.
    pub a_call_id: String,
    /// The caller's tag on its leg.
    pub a_their_tag: Option<String>,
    /// pasarela's tag on the caller's leg.
    pub a_our_tag: String,
    pub forks: Vec<ForkView>,
}

impl Call {
    /// The call as watchers see it.
    pub fn view(&self) -> CallView {
        let state = if self.answered.is_some() {
            LiveState::Answered
        } else if self.forks.iter().any(|f| f.state == ForkState::Early) {
            LiveState::Ringing
        } else {
            LiveState::Trying
        };
        CallView {
            id: self.id,
            caller: self.caller.number.clone(),
            caller_name: self.caller.name.clone(),
            from_outside: self.caller.origin.is_some(),
            callee: self.callee.clone(),
            stage_label: self.stage_label(self.stage).to_owned(),
            state,
            a_call_id: self
                .a
                .invite
                .headers
                .call_id()
                .unwrap_or_default()
                .to_owned(),
            a_their_tag: self
                .a
                .invite
                .headers
                .from()
                .and_then(|f| f.tag())
                .map(str::to_owned),
            a_our_tag: self.a.tag.clone(),
            forks: self
                .forks
                .iter()
                .enumerate()
                .map(|(index, f)| ForkView {
                    index,
                    uri: f.uri.clone(),
                    call_id: f.invite.headers.call_id().unwrap_or_default().to_owned(),
                    our_tag: f
                        .invite
                        .headers
                        .from()
                        .and_then(|t| t.tag())
                        .unwrap_or_default()
                        .to_owned(),
                    their_tag: f
                        .dialog
                        .as_ref()
                        .and_then(|d| d.remote.tag())
                        .map(str::to_owned),
                    ringing: f.state == ForkState::Early,
                    answered: f.state == ForkState::Answered,
                    live: matches!(
                        f.state,
                        ForkState::Trying | ForkState::Early | ForkState::Answered
                    ),
                })
                .collect(),
        }
    }
}
