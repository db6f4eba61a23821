//! Socket identity. The kernel hands us `struct sock` addresses; we never print
//! those (they are kernel pointers, and reused after free). Each address gets a small
//! id, starting at 1, that stays the same for all events of that socket while tracked.

use std::collections::{HashMap, VecDeque};

pub struct SocketTable {
    ids: HashMap<u64, u64>,
    /// Insertion order, for evicting the oldest when full.
    order: VecDeque<u64>,
    next: u64,
    max: usize,
    /// Sockets forgotten because the table was full (a ledger entry).
    pub evicted: u64,
}

impl SocketTable {
    pub fn new(max: usize) -> Self {
        Self {
            ids: HashMap::new(),
            order: VecDeque::new(),
            next: 1,
            max: max.max(1),
            evicted: 0,
        }
    }

    pub fn id_for(&mut self, sk: u64) -> u64 {
        if let Some(id) = self.ids.get(&sk) {
            return *id;
        }
        if self.ids.len() >= self.max {
            while let Some(old) = self.order.pop_front() {
                if self.ids.remove(&old).is_some() {
                    self.evicted += 1;
                    break;
                }
            }
        }
        let id = self.next;
        self.next += 1;
        self.ids.insert(sk, id);
        self.order.push_back(sk);
        // Forgotten sockets leave stale entries behind; compact so the queue stays
        // within a constant factor of the table.
        if self.order.len() > 2 * self.max {
            let ids = &self.ids;
            self.order.retain(|sk| ids.contains_key(sk));
        }
        id
    }

    /// The socket closed: a later socket at the same address is a new socket.
    pub fn forget(&mut self, sk: u64) {
        self.ids.remove(&sk);
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_socket_same_id_new_after_forget() {
        let mut t = SocketTable::new(8);
        let a = t.id_for(0xa);
        assert_eq!(t.id_for(0xa), a);
        let b = t.id_for(0xb);
        assert_ne!(a, b);
        t.forget(0xa);
        assert_ne!(t.id_for(0xa), a);
    }

    #[test]
    fn bounded() {
        let mut t = SocketTable::new(4);
        for sk in 0..100 {
            t.id_for(sk);
            assert!(t.len() <= 4);
        }
        assert_eq!(t.evicted, 96);
    }

    #[test]
    fn churn_keeps_order_bounded() {
        let mut t = SocketTable::new(4);
        for sk in 0..10_000 {
            t.id_for(sk);
            t.forget(sk);
            assert!(t.order.len() <= 8);
        }
        assert_eq!(t.evicted, 0);
    }
}
