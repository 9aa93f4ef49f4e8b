//! A socket's presence lifecycle, safe against its events arriving out of
//! order.
//!
//! socketioxide runs the connect handler in a task of its own, so a client
//! that leaves at once can have its disconnect handled first. Both handlers
//! take the socket's [`Lifecycle`] lock and move it through these steps; a
//! socket is registered in presence at most once and unregistered exactly
//! when it was registered, whichever handler runs first.

/// Where a socket is in its presence lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Step {
    /// Handshake passed; presence not yet told.
    #[default]
    Pending,
    /// Registered in presence.
    Online,
    /// Gone: nothing may register it again.
    Closed,
}

/// What a handler must do to presence after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Register the socket (it came online).
    Register,
    /// Unregister the socket (it was registered).
    Unregister,
    /// Leave presence alone.
    Nothing,
}

/// Pure: the connect handler ran; `still_open` is whether the socket is
/// still connected at that moment.
pub fn on_connect(step: Step, still_open: bool) -> (Step, Action) {
    match step {
        Step::Pending if still_open => (Step::Online, Action::Register),
        Step::Pending | Step::Closed => (Step::Closed, Action::Nothing),
        Step::Online => (Step::Online, Action::Nothing),
    }
}

/// Pure: the disconnect handler ran.
pub fn on_disconnect(step: Step) -> (Step, Action) {
    match step {
        Step::Online => (Step::Closed, Action::Unregister),
        Step::Pending | Step::Closed => (Step::Closed, Action::Nothing),
    }
}

/// One socket's lifecycle; the lock is held while presence is told, so the
/// two handlers' Redis writes cannot overtake each other.
#[derive(Debug, Default)]
pub struct Lifecycle(tokio::sync::Mutex<Step>);

impl Lifecycle {
    /// Locks the step for one transition.
    pub async fn lock(&self) -> tokio::sync::MutexGuard<'_, Step> {
        self.0.lock().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_then_disconnect_registers_then_unregisters() {
        let (step, action) = on_connect(Step::Pending, true);
        assert_eq!((step, action), (Step::Online, Action::Register));
        assert_eq!(on_disconnect(step), (Step::Closed, Action::Unregister));
    }

    #[test]
    fn disconnect_first_means_the_connect_never_registers() {
        let (step, action) = on_disconnect(Step::Pending);
        assert_eq!((step, action), (Step::Closed, Action::Nothing));
        assert_eq!(on_connect(step, true), (Step::Closed, Action::Nothing));
    }

    #[test]
    fn a_socket_already_closed_at_connect_is_not_registered() {
        assert_eq!(
            on_connect(Step::Pending, false),
            (Step::Closed, Action::Nothing)
        );
        assert_eq!(on_disconnect(Step::Closed), (Step::Closed, Action::Nothing));
        assert_eq!(
            on_connect(Step::Online, true),
            (Step::Online, Action::Nothing)
        );
    }
}
