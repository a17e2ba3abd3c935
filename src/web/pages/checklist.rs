//! The first-run checklist on the overview: what a new office still has to do before its
//! first call (an administrator, an extension, a registered phone, a PSTN line or trunk, a
//! test call), each step linking to where it is done. Hidden once every step is done.

use super::{PageError, WebState};

/// One step of the checklist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub done: bool,
    pub title: &'static str,
    /// What to do, when not done yet.
    pub hint: &'static str,
    pub link: &'static str,
    pub link_text: &'static str,
}

/// What the checklist is computed from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Facts {
    pub admin: bool,
    pub extensions: u64,
    pub registered: u64,
    pub lines: u64,
    pub records: u64,
}

/// The steps for `facts`; `None` when all are done (the checklist is hidden).
pub fn steps(f: Facts) -> Option<Vec<Step>> {
    let steps = vec![
        Step {
            done: f.admin,
            title: "Create the administrator",
            hint: "The first visit to the dashboard creates it.",
            link: "/setup",
            link_text: "Set up",
        },
        Step {
            done: f.extensions > 0,
            title: "Add an extension",
            hint: "An extension is a phone's account: a number and a SIP password.",
            link: "/extensions",
            link_text: "Add an extension",
        },
        Step {
            done: f.registered > 0,
            title: "Register a phone",
            hint: "Enter the values of the extension's phone setup panel in the phone.",
            link: "/extensions",
            link_text: "Phone setup",
        },
        Step {
            done: f.lines > 0,
            title: "Configure a PSTN line or SIP trunk",
            hint: "Add the SIP trunk your provider gave you on the Lines page (modems: a [[modem]] section in the configuration file); see the README.",
            link: "/lines",
            link_text: "Lines",
        },
        Step {
            done: f.records > 0,
            title: "Make a test call",
            hint: "Call another extension or an outside number; try the number first on the routing page.",
            link: "/routing",
            link_text: "Routing test",
        },
    ];
    (!steps.iter().all(|s| s.done)).then_some(steps)
}

/// The checklist of the running gateway, `None` when everything is done.
pub async fn load(state: &WebState) -> Result<Option<Vec<Step>>, PageError> {
    let now = crate::web::auth::now_unix();
    let (extensions, stored_bindings, records) = state
        .with_read(move |conn| {
            let c = crate::store::counts(conn, now)?;
            Ok((c.extensions, c.live_bindings, c.records))
        })
        .await?;
    let snapshot = match &state.live {
        Some(live) => live.snapshot().await,
        None => None,
    };
    let (registered, live_lines) = match &snapshot {
        Some(s) => (s.registrations.len() as u64, s.lines.len() as u64),
        None => (stored_bindings, 0),
    };
    Ok(steps(Facts {
        admin: true,
        extensions,
        registered,
        lines: (state.lines as u64).max(live_lines),
        records,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_only_when_everything_is_done() {
        let all = Facts {
            admin: true,
            extensions: 1,
            registered: 1,
            lines: 1,
            records: 1,
        };
        assert_eq!(steps(all), None);
        let fresh = Facts {
            admin: true,
            ..Facts::default()
        };
        let s = steps(fresh).unwrap();
        assert_eq!(s.len(), 5);
        assert!(s[0].done);
        assert!(s[1..].iter().all(|s| !s.done));
        let no_call = Facts { records: 0, ..all };
        assert_eq!(
            steps(no_call).unwrap().iter().filter(|s| !s.done).count(),
            1
        );
    }
}
