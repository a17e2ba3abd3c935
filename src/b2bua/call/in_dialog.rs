//! The in-dialog side of a call: requests from either phone once the call is set up (BYE,
//! re-INVITE and UPDATE with their SDP, INFO DTMF, pass-through of the rest), the answers to
//! what was forwarded, ACKs for our 2xx, and the requests pasarela sends on its own (BYE,
//! SIP INFO DTMF).

use super::*;

impl Call {
    /// Sends `side` a fresh offer on its relay port as our own re-INVITE (after a transfer or
    /// pickup changed who is on the other side); the transaction's key when one was sent.
    pub(super) fn reoffer(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        side: Side,
        settings: &CallSettings,
    ) -> Option<ClientKey> {
        let offer = self.sdp.fresh_offer_for(side, self.relay_port(side))?;
        let body = Bytes::from(offer.encode());
        let (k, _) = self.send_in_dialog(
            now,
            layer,
            side,
            Method::Invite,
            Some(("application/sdp", body)),
            settings,
        )?;
        self.own_reinvite.push((k, side));
        Some(k)
    }

    /// Whether what we last offered `side` was not sendrecv (we hold it).
    pub(super) fn held_by_us(&self, side: Side) -> bool {
        self.sdp
            .last_sent_direction(side)
            .is_some_and(|d| d != crate::sdp::Direction::SendRecv)
    }

    /// Sends a new in-dialog request to `side`.
    pub(super) fn send_in_dialog(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        side: Side,
        method: Method,
        content: Option<(&str, Bytes)>,
        settings: &CallSettings,
    ) -> Option<(ClientKey, Request)> {
        if let Some(i) = self.line_side(side) {
            // A line has no dialog: a BYE hangs it up, nothing else reaches it as a request.
            if method == Method::Bye {
                self.hang_up_line(i);
            }
            return None;
        }
        let d = self.dialog_mut(side)?;
        let peer = d.peer;
        let branch = layer.new_branch();
        let host = local_host(&peer, settings);
        let mut req = d.request(method.clone(), our_via(&peer, branch, host));
        if matches!(method, Method::Invite | Method::Update) {
            req.headers.push(our_contact(&peer, "pasarela", settings));
        }
        if let Some((ct, body)) = content {
            req.headers.push(Header::ContentType(ct.to_owned()));
            req.body = body;
        }
        let key = layer.send_request_ref(now, &req, peer);
        Some((key, req))
    }

    /// Sends a digit to `side` as SIP INFO (application/dtmf-relay), for phones without
    /// telephone-event.
    pub(super) fn send_info_dtmf(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        side: Side,
        digit: char,
        duration_ms: u32,
        settings: &CallSettings,
    ) {
        let body = Bytes::from(format!("Signal={digit}\r\nDuration={duration_ms}\r\n"));
        let content = Some(("application/dtmf-relay", body));
        let _ = self.send_in_dialog(now, layer, side, Method::Info, content, settings);
    }

    /// Hangs up both legs (BYE where a dialog exists).
    pub(super) fn hang_up(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        except: Option<Side>,
        settings: &CallSettings,
    ) {
        for side in [Side::A, Side::B] {
            if Some(side) != except {
                let _ = self.send_in_dialog(now, layer, side, Method::Bye, None, settings);
            }
        }
    }

    /// Hangs up both legs because an operator asked for it (the dashboard's live page).
    pub fn end_by_operator(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        settings: &CallSettings,
    ) {
        self.hang_up(now, layer, None, settings);
    }

    /// Hangs up both legs because pasarela is stopping.
    pub fn end_for_shutdown(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        settings: &CallSettings,
    ) {
        tracing::info!(call = self.id, "stopping: hanging up");
        self.hang_up(now, layer, None, settings);
    }

    /// A re-offer from `side`: when it puts the call on hold (sendonly, inactive or
    /// `c=0.0.0.0`), the other side hears music on hold until an offer resumes it.
    fn hold_offered(&mut self, side: Side, offer: &SessionDescription) {
        let held = offer.audio().is_some_and(|m| m.is_on_hold(offer));
        if std::mem::replace(&mut self.held[idx(side)], held) == held {
            return;
        }
        tracing::info!(call = self.id, ?side, held, "hold");
        if let Some(relay) = &self.relay {
            relay.hold_music(other(side), held);
        }
    }

    /// A re-offer (hold, resume, refresh) from `side` towards a line: answered here with the line's own
    /// stream, which does not change.
    #[allow(clippy::too_many_arguments)]
    fn line_reoffer(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        key: ServerKey,
        req: &Request,
        peer: Peer,
        side: Side,
        i: usize,
        offer: &SessionDescription,
        settings: &CallSettings,
    ) -> ForkAction {
        let line = other(side);
        // The line's stream as it is, in the direction that answers the offer's (hold:
        // sendonly → recvonly).
        let answer = self.line_sdp_of(i).map(|mut a| {
            if let (Some(k), Some(m)) = (offer.audio_index(), a.audio_mut()) {
                m.set_direction(offer.media_direction(k).reverse());
            }
            a
        });
        let result = self
            .sdp
            .offer_to(line, offer, self.relay_port(line))
            .and_then(|_| {
                let answer = answer.ok_or((500, "The line has no audio".to_string()))?;
                self.sdp.answered(
                    side,
                    offer,
                    &answer,
                    self.relay_port(side),
                    self.relay.as_deref(),
                )
            });
        match result {
            Ok(for_offerer) => {
                let resp = reply_with(
                    layer,
                    now,
                    key,
                    req,
                    200,
                    Some(&for_offerer),
                    Some(our_contact(&peer, "pasarela", settings)),
                );
                if req.method == Method::Invite {
                    let seq = req.headers.cseq().map_or(0, |c| c.seq);
                    self.start_retrans(now, side, seq, resp, peer, settings);
                    return ForkAction::Retransmit;
                }
                ForkAction::None
            }
            Err((st, why)) => {
                tracing::info!(call = self.id, "re-offer towards the line refused: {why}");
                reply(layer, now, key, req, st);
                ForkAction::None
            }
        }
    }

    pub fn in_dialog_request(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        key: ServerKey,
        req: Request,
        peer: Peer,
        settings: &CallSettings,
    ) -> ForkAction {
        let Some(side) = self.side_of(&req) else {
            reply(layer, now, key, &req, 481);
            return ForkAction::None;
        };
        let in_order = self
            .dialog_mut(side)
            .is_some_and(|d| d.accept_remote_cseq(&req));
        if !in_order {
            reply(layer, now, key, &req, 500);
            return ForkAction::None;
        }
        // Follow the flow the peer now uses (symmetric signalling through NAT).
        if let Some(d) = self.dialog_mut(side) {
            d.peer = peer;
        }
        match req.method {
            Method::Refer => self.refer(now, layer, key, &req, peer, side, settings),
            Method::Bye if self.transferor_leaves(side) => {
                reply(layer, now, key, &req, 200);
                ForkAction::None
            }
            Method::Bye => {
                if self.far_party_of_transfer(side) && self.transfer.take().is_some() {
                    // The far party gave up waiting: what rings for the transfer is cancelled.
                    let _ = self.cancel_forks(now, layer, None);
                }
                self.q850 = self.q850.or_else(|| super::q850_reason(&req.headers));
                reply(layer, now, key, &req, 200);
                let _ = self.send_in_dialog(now, layer, other(side), Method::Bye, None, settings);
                self.outcome.get_or_insert((200, "answered"));
                self.retrans.clear();
                ForkAction::Finished
            }
            Method::Options => {
                reply(layer, now, key, &req, 200);
                ForkAction::None
            }
            Method::Info if sdp_flow::dtmf_from_info(&req).is_some() => {
                let (digit, ms) = sdp_flow::dtmf_from_info(&req).unwrap_or(('0', 100));
                reply(layer, now, key, &req, 200);
                let to = other(side);
                if let Some(i) = self.line_side(to) {
                    self.line_out.push(LineCommand::Digit {
                        leg: LegId {
                            call: self.id,
                            fork: i,
                        },
                        digit,
                    });
                } else if self.sdp.has_dtmf_events(to) {
                    if let Some(relay) = &self.relay {
                        relay.send_dtmf(to, digit, ms);
                    }
                } else {
                    self.send_info_dtmf(now, layer, to, digit, ms, settings);
                }
                ForkAction::None
            }
            Method::Invite | Method::Update => {
                if self
                    .forwarded
                    .values()
                    .any(|f| matches!(f.request.method, Method::Invite | Method::Update))
                {
                    reply(layer, now, key, &req, 491);
                    return ForkAction::None;
                }
                if let Some(d) = self.dialog_mut(side) {
                    d.refresh_target(&req.headers);
                }
                match sdp_of(&req.headers, &req.body) {
                    Some(Err(())) => {
                        reply(layer, now, key, &req, 400);
                        ForkAction::None
                    }
                    None => {
                        // No offer: answer with our current session; the peer's answer comes in the ACK.
                        let offer = self.sdp.current_for(side, self.relay_port(side));
                        let resp = reply_with(
                            layer,
                            now,
                            key,
                            &req,
                            200,
                            offer.as_ref(),
                            Some(our_contact(&peer, "pasarela", settings)),
                        );
                        if req.method == Method::Invite {
                            self.answer_in_ack[idx(side)] = offer.is_some();
                            let seq = req.headers.cseq().map_or(0, |c| c.seq);
                            self.start_retrans(now, side, seq, resp, peer, settings);
                            return ForkAction::Retransmit;
                        }
                        ForkAction::None
                    }
                    Some(Ok(offer)) => {
                        let to = other(side);
                        self.hold_offered(side, &offer);
                        if let Some(i) = self.line_side(to) {
                            return self.line_reoffer(
                                now, layer, key, &req, peer, side, i, &offer, settings,
                            );
                        }
                        let fwd = match self.sdp.offer_to(to, &offer, self.relay_port(to)) {
                            Ok(fwd) => fwd,
                            Err((st, why)) => {
                                tracing::info!(call = self.id, "re-offer refused: {why}");
                                reply(layer, now, key, &req, st);
                                return ForkAction::None;
                            }
                        };
                        let body = fwd.map(|s| Bytes::from(s.encode()));
                        let content = body.map(|b| ("application/sdp", b));
                        match self.send_in_dialog(
                            now,
                            layer,
                            to,
                            req.method.clone(),
                            content,
                            settings,
                        ) {
                            Some((k, _)) => {
                                self.forwarded.insert(
                                    k,
                                    Forwarded {
                                        from: side,
                                        server_key: key,
                                        request: req,
                                        offer: Some(offer),
                                    },
                                );
                                ForkAction::Track(k)
                            }
                            None => {
                                reply(layer, now, key, &req, 500);
                                ForkAction::None
                            }
                        }
                    }
                }
            }
            _ => {
                // INFO, MESSAGE, NOTIFY … pass through to the other leg.
                let to = other(side);
                let ct = req.headers.content_type().map(str::to_owned);
                let content = ct.as_deref().map(|c| (c, req.body.clone()));
                match self.send_in_dialog(now, layer, to, req.method.clone(), content, settings) {
                    Some((k, _)) => {
                        self.forwarded.insert(
                            k,
                            Forwarded {
                                from: side,
                                server_key: key,
                                request: req,
                                offer: None,
                            },
                        );
                        ForkAction::Track(k)
                    }
                    None => {
                        reply(layer, now, key, &req, 481);
                        ForkAction::None
                    }
                }
            }
        }
    }

    pub fn in_dialog_response(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        key: ClientKey,
        resp: Response,
        settings: &CallSettings,
    ) -> ForkAction {
        if resp.status < 200 {
            return ForkAction::None;
        }
        if self.own_reinvite_answered(layer, &key, &resp, settings) {
            return ForkAction::None;
        }
        let Some(fwd) = self.forwarded.remove(&key) else {
            return ForkAction::None;
        };
        let to = fwd.from;
        let answerer = other(to);
        let mut answer_for_offerer = None;
        if (200..300).contains(&resp.status) {
            if let Some(d) = self.dialog_mut(answerer) {
                d.refresh_target(&resp.headers);
            }
            if resp
                .headers
                .cseq()
                .is_some_and(|c| c.method == Method::Invite)
            {
                // ACK the answerer's 2xx.
                if let Some(d) = self.dialog_mut(answerer) {
                    let peer = d.peer;
                    let seq = resp.headers.cseq().map_or(0, |c| c.seq);
                    let via = our_via(&peer, layer.new_branch(), local_host(&peer, settings));
                    let ack = d.ack(seq, via);
                    layer.send_stateless(peer, &Message::Request(ack));
                }
            }
            if let (Some(offer), Some(Ok(answer))) = (&fwd.offer, sdp_of(&resp.headers, &resp.body))
            {
                match self.sdp.answered(
                    to,
                    offer,
                    &answer,
                    self.relay_port(to),
                    self.relay.as_deref(),
                ) {
                    Ok(s) => answer_for_offerer = Some(s),
                    Err((st, _)) => {
                        let r = reply(layer, now, fwd.server_key, &fwd.request, st);
                        let _ = r;
                        return ForkAction::None;
                    }
                }
            }
        }
        let peer = self.dialog_mut(to).map(|d| d.peer);
        let mut r = Response::to_request(&fwd.request, resp.status, &resp.reason, None);
        if (200..300).contains(&resp.status) {
            if let Some(p) = &peer {
                if matches!(fwd.request.method, Method::Invite | Method::Update) {
                    r.headers.push(our_contact(p, "pasarela", settings));
                }
            }
        }
        match &answer_for_offerer {
            Some(s) => r.body = with_body(&mut r.headers, Some(s)),
            None if fwd.offer.is_none() && !resp.body.is_empty() => {
                if let Some(ct) = resp.headers.content_type() {
                    r.headers.push(Header::ContentType(ct.to_owned()));
                    r.body = resp.body.clone();
                }
            }
            None => {}
        }
        layer.respond(now, fwd.server_key, r.clone());
        if (200..300).contains(&resp.status) && fwd.request.method == Method::Invite {
            if let Some(p) = peer {
                let seq = fwd.request.headers.cseq().map_or(0, |c| c.seq);
                self.start_retrans(now, to, seq, r, p, settings);
                return ForkAction::Retransmit;
            }
        }
        if resp.status == 481 || resp.status == 408 {
            // The other side is gone.
            self.hang_up(now, layer, Some(answerer), settings);
            return ForkAction::Finished;
        }
        ForkAction::None
    }

    pub fn in_dialog_timeout(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        key: ClientKey,
    ) -> ForkAction {
        if let Some(fwd) = self.forwarded.remove(&key) {
            let r = Response::to_request(&fwd.request, 408, reason_phrase(408), None);
            layer.respond(now, fwd.server_key, r);
        }
        ForkAction::None
    }

    pub fn ack(
        &mut self,
        _now: Instant,
        _layer: &mut TransactionLayer,
        req: Request,
        _settings: &CallSettings,
    ) -> ForkAction {
        let Some(side) = self.side_of(&req) else {
            return ForkAction::None;
        };
        let seq = req.headers.cseq().map_or(0, |c| c.seq);
        self.retrans.retain(|r| !(r.side == side && r.cseq == seq));
        if self.retrans.is_empty() {
            // A held call keeps no room for 2xx retransmissions it no longer makes.
            self.retrans = Vec::new();
        }
        if let Some(d) = self.dialog_mut(side) {
            // ACK keeps the flow fresh too.
            let _ = d;
        }
        if let Some(Ok(answer)) = sdp_of(&req.headers, &req.body) {
            // The answer to an offer we made in a 2xx (offerless INVITE or re-INVITE).
            if side == Side::A && self.sdp.awaiting_a_answer() {
                self.sdp.a_answers_in_ack(&answer, self.relay.as_deref());
            } else if self.answer_in_ack[idx(side)] {
                self.sdp.answer_in_ack(side, &answer, self.relay.as_deref());
            }
            self.answer_in_ack[idx(side)] = false;
        }
        ForkAction::None
    }

    /// Re-sends the ACK for a retransmitted 2xx from the winning fork.
    pub fn reack(&self, layer: &mut TransactionLayer, resp: &Response, peer: Peer) {
        let Some(fork) = self.winner.and_then(|w| self.forks.get(w)) else {
            return;
        };
        let Some(d) = &fork.dialog else { return };
        let seq = resp.headers.cseq().map_or(0, |c| c.seq);
        let via = our_via(
            &peer,
            layer.new_branch(),
            fork.invite
                .headers
                .via()
                .map_or(Host::Name("pasarela.invalid".into()), |v| v.host.clone()),
        );
        layer.send_stateless(peer, &Message::Request(d.ack(seq, via)));
    }
}
