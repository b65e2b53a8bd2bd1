using FASTER.core;

namespace KvStore.Storage.Backend;

/// <summary>
/// FasterKV's checkpoint files in a store's checkpoint directory, as FasterKV lays them out by default (its default
/// naming scheme, local files, outdated checkpoints removed). Built here rather than by FasterKV so that the store's
/// open-time check reads the same files, so that a failed write to one of them is noticed (<see cref="Writes"/>),
/// and so that a test can put every checkpoint file's device behind a wrapper.
/// </summary>
internal static class CheckpointFiles
{
    /// <param name="checkpointDir">The store's checkpoint directory.</param>
    /// <param name="writes">Records the first failed write to any checkpoint file, and keeps older checkpoints from then on.</param>
    /// <param name="wrapDevice">Tests only: wraps each device a checkpoint file is written or read through; null in the server.</param>
    public static DeviceLogCommitCheckpointManager OpenManager(string checkpointDir, Writes? writes = null, Func<IDevice, IDevice>? wrapDevice = null)
    {
        INamedDeviceFactory devices = new LocalStorageNamedDeviceFactory();
        if (wrapDevice is not null)
        {
            devices = new WrappingDeviceFactory(devices, wrapDevice);
        }

        if (writes is not null)
        {
            devices = new GuardedDeviceFactory(devices, writes);
        }

        return new DeviceLogCommitCheckpointManager(devices, new DefaultCheckpointNamingScheme(new DirectoryInfo(checkpointDir).FullName), removeOutdated: true);
    }

    /// <summary>
    /// FasterKV ignores the outcome of its checkpoint metadata writes: a checkpoint whose metadata never reached the
    /// disk (EIO, a full disk) reports success, and FasterKV then deletes the previous checkpoint, leaving none that
    /// recovery can read. This notes the first failed write to any checkpoint file, for the store to refuse the
    /// checkpoint, and from then on keeps every checkpoint FasterKV would delete.
    /// </summary>
    public sealed class Writes
    {
        private volatile IOException? _failure;

        /// <summary>The first write to a checkpoint file that failed, or null.</summary>
        public IOException? Failure => _failure;

        internal void Failed(string file, uint errorCode) =>
            Interlocked.CompareExchange(ref _failure, new IOException($"a write to FasterKV checkpoint file '{file}' failed (error {errorCode})"), null);
    }

    private sealed class WrappingDeviceFactory(INamedDeviceFactory inner, Func<IDevice, IDevice> wrap) : INamedDeviceFactory
    {
        public void Initialize(string baseName) => inner.Initialize(baseName);

        public IDevice Get(FileDescriptor fileInfo) => wrap(inner.Get(fileInfo));

        public void Delete(FileDescriptor fileInfo) => inner.Delete(fileInfo);

        public IEnumerable<FileDescriptor> ListContents(string path) => inner.ListContents(path);
    }

    private sealed class GuardedDeviceFactory(INamedDeviceFactory inner, Writes writes) : INamedDeviceFactory
    {
        public void Initialize(string baseName) => inner.Initialize(baseName);

        public IDevice Get(FileDescriptor fileInfo) => new WriteErrorRecordingDevice(inner.Get(fileInfo), writes);

        public void Delete(FileDescriptor fileInfo)
        {
            // After a failed write the newest checkpoint may not be readable: the older ones are what recovery needs.
            if (writes.Failure is null)
            {
                inner.Delete(fileInfo);
            }
        }

        public IEnumerable<FileDescriptor> ListContents(string path) => inner.ListContents(path);
    }

    private sealed class WriteErrorRecordingDevice(IDevice inner, Writes writes) : ForwardingDevice(inner)
    {
        public override void WriteAsync(IntPtr sourceAddress, int segmentId, ulong destinationAddress, uint numBytesToWrite, DeviceIOCompletionCallback callback, object context) =>
            Inner.WriteAsync(sourceAddress, segmentId, destinationAddress, numBytesToWrite, (errorCode, numBytes, ctx) =>
            {
                if (errorCode != 0)
                {
                    writes.Failed(FileName, errorCode);
                }

                callback(errorCode, numBytes, ctx);
            }, context);
    }
}
