//! UDP and the path MTU: large datagrams, EMSGSIZE, and too-big messages quoting UDP
//! flows (IKE on 500/4500 first among them). UDP has no retransmits to watch, so
//! the evidence is per flow: what was sent, what came back, what the kernel refused.

use std::collections::{HashMap, VecDeque};

use std::net::IpAddr;

use agent_common::{
    event::{Flow, IcmpTooBig, SendError, UdpSend, icmp_source},
    kernel::errno::EMSGSIZE,
};

use super::{
    Confidence, Ctx, Reported, Verdict,
    evidence::{Evidence, UdpGround, UdpPathMtu},
};
use crate::{engine::sockets::FlowKey, net};

const MAX_FLOWS: usize = 4096;

#[derive(Default)]
struct UdpFlow {
    large_sends: u32,
    max_bytes: u32,
    emsgsize: u32,
    too_big_mtu: Option<u32>,
    router: Option<IpAddr>,
    too_big_received: u32,
    /// A router on this host generated a too-big for the flow (icmp_send).
    too_big_generated: u32,
    reported: Option<Confidence>,
}

#[derive(Default)]
pub struct Udp {
    flows: HashMap<FlowKey, UdpFlow>,
    order: VecDeque<FlowKey>,
}

impl Udp {
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    fn flow(&mut self, f: &Flow) -> &mut UdpFlow {
        let key = FlowKey::from(f);
        if !self.flows.contains_key(&key) {
            if self.flows.len() >= MAX_FLOWS
                && let Some(old) = self.order.pop_front()
            {
                self.flows.remove(&old);
            }
            self.order.push_back(key);
        }
        self.flows.entry(key).or_default()
    }

    pub fn on_send(&mut self, c: &Ctx, e: &UdpSend) -> Option<Verdict> {
        let f = self.flow(&e.flow);
        f.large_sends += 1;
        f.max_bytes = f.max_bytes.max(e.bytes);
        judge(c, &e.flow, e.header.ts_ns, e.netns, f)
    }

    pub fn on_send_error(&mut self, c: &Ctx, e: &SendError) -> Option<Verdict> {
        if e.errno != EMSGSIZE {
            return None;
        }
        let f = self.flow(&e.flow);
        f.emsgsize += 1;
        f.max_bytes = f.max_bytes.max(e.bytes);
        judge(c, &e.flow, e.header.ts_ns, e.netns, f)
    }

    pub fn on_too_big(&mut self, c: &Ctx, e: &IcmpTooBig) -> Option<Verdict> {
        let f = self.flow(&e.quoted);
        if e.source == icmp_source::RECEIVED {
            f.too_big_received += 1;
            f.too_big_mtu = Some(e.mtu);
            f.router = Some(net::ip(e.quoted.family, &e.router));
        } else {
            f.too_big_generated += 1;
        }
        judge(c, &e.quoted, e.header.ts_ns, e.netns, f)
    }
}

fn judge(c: &Ctx, flow: &Flow, ts: u64, netns: u32, f: &mut UdpFlow) -> Option<Verdict> {
    let (confidence, ground) = if f.emsgsize > 0 {
        (Confidence::High, UdpGround::Emsgsize)
    } else if f.too_big_received > 0 && f.large_sends > 0 {
        (Confidence::High, UdpGround::TooBigReceived)
    } else if f.large_sends >= 2 && f.too_big_generated > 0 {
        (Confidence::High, UdpGround::GeneratedHereNoneBack)
    } else if f.large_sends >= 2 {
        (Confidence::Medium, UdpGround::NoneBack)
    } else {
        return None;
    };
    if !f.reported.raise(confidence) {
        return None;
    }
    Some(Verdict {
        ts_ns: ts,
        sock: c.sock,
        flow: *flow,
        owner: c.owner,
        confidence,
        evidence: Evidence::UdpPathMtu(UdpPathMtu {
            largest_datagram: f.max_bytes,
            large_datagrams: f.large_sends,
            emsgsize: f.emsgsize,
            too_big_received: f.too_big_received,
            path_mtu: f.too_big_mtu,
            router: f.router,
            too_big_generated_on_this_host: f.too_big_generated,
            service: net::service(flow),
            ground,
        }),
        netns,
    })
}
