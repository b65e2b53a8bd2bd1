using System.Text;
using KvStore.Storage.Mvcc;
using Microsoft.Extensions.Logging.Abstractions;

// kvstore-damage <data-dir> <key> <new-value>
// Opens a stopped member's store (<data-dir>/member/kv) and rewrites the record of the key's latest revision with a
// different value, keeping its revisions and version: the member's key space now differs from its peers' while its
// revision, consistent index and raft log say it is in step with them. Exit 0 with one line on what changed.
if (args.Length != 3)
{
    Console.Error.WriteLine("usage: kvstore-damage <data-dir> <key> <new-value>");
    return 2;
}

var storeDir = Path.Combine(args[0], "member", "kv");
if (!Directory.Exists(storeDir))
{
    Console.Error.WriteLine($"no store at {storeDir}");
    return 1;
}

using var store = MvccStore.Open(new MvccStoreOptions { DataDirectory = storeDir }, NullLogger.Instance);
var key = Encoding.UTF8.GetBytes(args[1]);
var before = store.HashKV(0);
if (!store.OverwriteLatestValueBypassingLog(key, Encoding.UTF8.GetBytes(args[2])))
{
    Console.Error.WriteLine($"key {args[1]} has no live revision in {storeDir}");
    return 1;
}

var after = store.HashKV(0);
Console.WriteLine($"damaged {args[1]} at revision {after.Revision}: hash {before.Hash} -> {after.Hash}");
return 0;
