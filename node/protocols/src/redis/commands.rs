//! Redis command names and arities, for detection and inline commands.
//!
//! Generated from the `COMMAND` reply of Redis 7.0.15 (Debian's `redis-server`): the name
//! uppercased, and the arity as Redis gives it: `n > 0` exactly `n` array elements with the
//! name, `n < 0` at least `-n`.

/// `(NAME, arity)`, sorted by name.
pub(super) const COMMANDS: [(&str, i8); 240] = [
    ("ACL", -2),
    ("APPEND", 3),
    ("ASKING", 1),
    ("AUTH", -2),
    ("BGREWRITEAOF", 1),
    ("BGSAVE", -1),
    ("BITCOUNT", -2),
    ("BITFIELD", -2),
    ("BITFIELD_RO", -2),
    ("BITOP", -4),
    ("BITPOS", -3),
    ("BLMOVE", 6),
    ("BLMPOP", -5),
    ("BLPOP", -3),
    ("BRPOP", -3),
    ("BRPOPLPUSH", 4),
    ("BZMPOP", -5),
    ("BZPOPMAX", -3),
    ("BZPOPMIN", -3),
    ("CLIENT", -2),
    ("CLUSTER", -2),
    ("COMMAND", -1),
    ("CONFIG", -2),
    ("COPY", -3),
    ("DBSIZE", 1),
    ("DEBUG", -2),
    ("DECR", 2),
    ("DECRBY", 3),
    ("DEL", -2),
    ("DISCARD", 1),
    ("DUMP", 2),
    ("ECHO", 2),
    ("EVAL", -3),
    ("EVALSHA", -3),
    ("EVALSHA_RO", -3),
    ("EVAL_RO", -3),
    ("EXEC", 1),
    ("EXISTS", -2),
    ("EXPIRE", -3),
    ("EXPIREAT", -3),
    ("EXPIRETIME", 2),
    ("FAILOVER", -1),
    ("FCALL", -3),
    ("FCALL_RO", -3),
    ("FLUSHALL", -1),
    ("FLUSHDB", -1),
    ("FUNCTION", -2),
    ("GEOADD", -5),
    ("GEODIST", -4),
    ("GEOHASH", -2),
    ("GEOPOS", -2),
    ("GEORADIUS", -6),
    ("GEORADIUSBYMEMBER", -5),
    ("GEORADIUSBYMEMBER_RO", -5),
    ("GEORADIUS_RO", -6),
    ("GEOSEARCH", -7),
    ("GEOSEARCHSTORE", -8),
    ("GET", 2),
    ("GETBIT", 3),
    ("GETDEL", 2),
    ("GETEX", -2),
    ("GETRANGE", 4),
    ("GETSET", 3),
    ("HDEL", -3),
    ("HELLO", -1),
    ("HEXISTS", 3),
    ("HGET", 3),
    ("HGETALL", 2),
    ("HINCRBY", 4),
    ("HINCRBYFLOAT", 4),
    ("HKEYS", 2),
    ("HLEN", 2),
    ("HMGET", -3),
    ("HMSET", -4),
    ("HRANDFIELD", -2),
    ("HSCAN", -3),
    ("HSET", -4),
    ("HSETNX", 4),
    ("HSTRLEN", 3),
    ("HVALS", 2),
    ("INCR", 2),
    ("INCRBY", 3),
    ("INCRBYFLOAT", 3),
    ("INFO", -1),
    ("KEYS", 2),
    ("LASTSAVE", 1),
    ("LATENCY", -2),
    ("LCS", -3),
    ("LINDEX", 3),
    ("LINSERT", 5),
    ("LLEN", 2),
    ("LMOVE", 5),
    ("LMPOP", -4),
    ("LOLWUT", -1),
    ("LPOP", -2),
    ("LPOS", -3),
    ("LPUSH", -3),
    ("LPUSHX", -3),
    ("LRANGE", 4),
    ("LREM", 4),
    ("LSET", 4),
    ("LTRIM", 4),
    ("MEMORY", -2),
    ("MGET", -2),
    ("MIGRATE", -6),
    ("MODULE", -2),
    ("MONITOR", 1),
    ("MOVE", 3),
    ("MSET", -3),
    ("MSETNX", -3),
    ("MULTI", 1),
    ("OBJECT", -2),
    ("PERSIST", 2),
    ("PEXPIRE", -3),
    ("PEXPIREAT", -3),
    ("PEXPIRETIME", 2),
    ("PFADD", -2),
    ("PFCOUNT", -2),
    ("PFDEBUG", 3),
    ("PFMERGE", -2),
    ("PFSELFTEST", 1),
    ("PING", -1),
    ("PSETEX", 4),
    ("PSUBSCRIBE", -2),
    ("PSYNC", -3),
    ("PTTL", 2),
    ("PUBLISH", 3),
    ("PUBSUB", -2),
    ("PUNSUBSCRIBE", -1),
    ("QUIT", -1),
    ("RANDOMKEY", 1),
    ("READONLY", 1),
    ("READWRITE", 1),
    ("RENAME", 3),
    ("RENAMENX", 3),
    ("REPLCONF", -1),
    ("REPLICAOF", 3),
    ("RESET", 1),
    ("RESTORE", -4),
    ("RESTORE-ASKING", -4),
    ("ROLE", 1),
    ("RPOP", -2),
    ("RPOPLPUSH", 3),
    ("RPUSH", -3),
    ("RPUSHX", -3),
    ("SADD", -3),
    ("SAVE", 1),
    ("SCAN", -2),
    ("SCARD", 2),
    ("SCRIPT", -2),
    ("SDIFF", -2),
    ("SDIFFSTORE", -3),
    ("SELECT", 2),
    ("SET", -3),
    ("SETBIT", 4),
    ("SETEX", 4),
    ("SETNX", 3),
    ("SETRANGE", 4),
    ("SHUTDOWN", -1),
    ("SINTER", -2),
    ("SINTERCARD", -3),
    ("SINTERSTORE", -3),
    ("SISMEMBER", 3),
    ("SLAVEOF", 3),
    ("SLOWLOG", -2),
    ("SMEMBERS", 2),
    ("SMISMEMBER", -3),
    ("SMOVE", 4),
    ("SORT", -2),
    ("SORT_RO", -2),
    ("SPOP", -2),
    ("SPUBLISH", 3),
    ("SRANDMEMBER", -2),
    ("SREM", -3),
    ("SSCAN", -3),
    ("SSUBSCRIBE", -2),
    ("STRLEN", 2),
    ("SUBSCRIBE", -2),
    ("SUBSTR", 4),
    ("SUNION", -2),
    ("SUNIONSTORE", -3),
    ("SUNSUBSCRIBE", -1),
    ("SWAPDB", 3),
    ("SYNC", 1),
    ("TIME", 1),
    ("TOUCH", -2),
    ("TTL", 2),
    ("TYPE", 2),
    ("UNLINK", -2),
    ("UNSUBSCRIBE", -1),
    ("UNWATCH", 1),
    ("WAIT", 3),
    ("WATCH", -2),
    ("XACK", -4),
    ("XADD", -5),
    ("XAUTOCLAIM", -6),
    ("XCLAIM", -6),
    ("XDEL", -3),
    ("XGROUP", -2),
    ("XINFO", -2),
    ("XLEN", 2),
    ("XPENDING", -3),
    ("XRANGE", -4),
    ("XREAD", -4),
    ("XREADGROUP", -7),
    ("XREVRANGE", -4),
    ("XSETID", -3),
    ("XTRIM", -4),
    ("ZADD", -4),
    ("ZCARD", 2),
    ("ZCOUNT", 4),
    ("ZDIFF", -3),
    ("ZDIFFSTORE", -4),
    ("ZINCRBY", 4),
    ("ZINTER", -3),
    ("ZINTERCARD", -3),
    ("ZINTERSTORE", -4),
    ("ZLEXCOUNT", 4),
    ("ZMPOP", -4),
    ("ZMSCORE", -3),
    ("ZPOPMAX", -2),
    ("ZPOPMIN", -2),
    ("ZRANDMEMBER", -2),
    ("ZRANGE", -4),
    ("ZRANGEBYLEX", -4),
    ("ZRANGEBYSCORE", -4),
    ("ZRANGESTORE", -5),
    ("ZRANK", 3),
    ("ZREM", -3),
    ("ZREMRANGEBYLEX", 4),
    ("ZREMRANGEBYRANK", 4),
    ("ZREMRANGEBYSCORE", 4),
    ("ZREVRANGE", -4),
    ("ZREVRANGEBYLEX", -4),
    ("ZREVRANGEBYSCORE", -4),
    ("ZREVRANK", 3),
    ("ZSCAN", -3),
    ("ZSCORE", 3),
    ("ZUNION", -3),
    ("ZUNIONSTORE", -4),
];

/// The longest command name.
pub(super) const MAX_NAME: usize = 20;

/// The arity of a command, by name in any case.
pub(super) fn arity(name: &[u8]) -> Option<i8> {
    let upper = upper(name)?;
    let upper = &upper[..name.len()];
    COMMANDS
        .binary_search_by(|(known, _)| known.as_bytes().cmp(upper))
        .ok()
        .map(|i| COMMANDS[i].1)
}

/// Whether `prefix`, in any case, starts some command name.
pub(super) fn is_name_prefix(prefix: &[u8]) -> bool {
    let Some(upper) = upper(prefix) else {
        return false;
    };
    let upper = &upper[..prefix.len()];
    let start = COMMANDS.partition_point(|(known, _)| known.as_bytes() < upper);
    COMMANDS
        .get(start)
        .is_some_and(|(known, _)| known.as_bytes().starts_with(upper))
}

/// Whether a request of `elements` array elements (the name included) fits `arity`.
pub(super) fn arity_fits(arity: i8, elements: u64) -> bool {
    if arity >= 0 {
        elements == u64::from(arity.unsigned_abs())
    } else {
        elements >= u64::from(arity.unsigned_abs())
    }
}

fn upper(name: &[u8]) -> Option<[u8; MAX_NAME]> {
    if name.len() > MAX_NAME {
        return None;
    }
    let mut upper = [0u8; MAX_NAME];
    for (u, b) in upper.iter_mut().zip(name) {
        *u = b.to_ascii_uppercase();
    }
    Some(upper)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_searchable() {
        assert!(COMMANDS.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(COMMANDS.iter().all(|(name, _)| name.len() <= MAX_NAME));
        assert_eq!(arity(b"get"), Some(2));
        assert_eq!(arity(b"SeT"), Some(-3));
        assert_eq!(arity(b"config"), Some(-2));
        assert_eq!(arity(b"nosuchcommand"), None);
        assert_eq!(arity(b"averyveryverylongcommandname"), None);
        assert!(is_name_prefix(b"lpu"));
        assert!(is_name_prefix(b""));
        assert!(!is_name_prefix(b"lpx"));
        assert!(arity_fits(-3, 3) && arity_fits(-3, 5) && !arity_fits(-3, 2));
        assert!(arity_fits(2, 2) && !arity_fits(2, 3));
    }
}
