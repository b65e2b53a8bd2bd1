using FASTER.core;

namespace KvStore.Storage.Backend;

/// <summary>
/// FasterKV's checkpoint files in a store's checkpoint directory, as FasterKV lays them out by default (its default
/// naming scheme, local files, outdated checkpoints removed). Built here rather than by FasterKV so that the store's
/// open-time check reads the same files, and so that a test can put every checkpoint file's device behind a wrapper.
/// </summary>
internal static class CheckpointFiles
{
    /// <param name="wrapDevice">Tests only: wraps each device a checkpoint file is written or read through; null in the server.</param>
    public static DeviceLogCommitCheckpointManager OpenManager(string checkpointDir, Func<IDevice, IDevice>? wrapDevice = null)
    {
        INamedDeviceFactory devices = new LocalStorageNamedDeviceFactory();
        if (wrapDevice is not null)
        {
            devices = new WrappingDeviceFactory(devices, wrapDevice);
        }

        return new DeviceLogCommitCheckpointManager(devices, new DefaultCheckpointNamingScheme(new DirectoryInfo(checkpointDir).FullName), removeOutdated: true);
    }

    private sealed class WrappingDeviceFactory(INamedDeviceFactory inner, Func<IDevice, IDevice> wrap) : INamedDeviceFactory
    {
        public void Initialize(string baseName) => inner.Initialize(baseName);

        public IDevice Get(FileDescriptor fileInfo) => wrap(inner.Get(fileInfo));

        public void Delete(FileDescriptor fileInfo) => inner.Delete(fileInfo);

        public IEnumerable<FileDescriptor> ListContents(string path) => inner.ListContents(path);
    }
}
