using FASTER.core;

namespace KvStore.Testing;

/// <summary>
/// Several <see cref="PowerLossDevice"/>s on one machine (test only): one cut stops them all, and the loss is then
/// applied to the unflushed writes of each. Devices wrapped after the cut (a checkpoint opening its next file) are
/// cut from the start.
/// </summary>
internal sealed class PowerDomain
{
    private readonly object _lock = new();
    private readonly List<PowerLossDevice> _devices = [];
    private readonly TaskCompletionSource _writeAfterCut = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private bool _cut;
    private bool _freeze;
    private bool _released;

    public bool IsCut
    {
        get
        {
            lock (_lock)
            {
                return _cut;
            }
        }
    }

    /// <summary>Completes when an owner issues a write to any of the devices after a freezing cut: the abandoned owner went on as far as it could.</summary>
    public Task WriteAfterCut => _writeAfterCut.Task;

    /// <summary>Puts a device on this domain's power; usable as a device-wrapping hook.</summary>
    public PowerLossDevice Wrap(IDevice inner)
    {
        var device = new PowerLossDevice(inner, () => _writeAfterCut.TrySetResult());
        lock (_lock)
        {
            if (_cut)
            {
                device.CutPower(_freeze);
            }

            if (_released)
            {
                device.ReleaseDiscarding();
            }

            _devices.Add(device);
        }

        return device;
    }

    /// <summary>Writes in flight on the devices <paramref name="which"/> selects (all when null).</summary>
    public int InFlight(Func<PowerLossDevice, bool>? which = null)
    {
        lock (_lock)
        {
            return _devices.Where(d => which is null || which(d)).Sum(d => d.InFlight);
        }
    }

    /// <summary>Cuts every device at once (under the domain's lock, so no device joins halfway); see <see cref="PowerLossDevice.CutPower(bool)"/>.</summary>
    public void CutPower(bool freeze)
    {
        lock (_lock)
        {
            _cut = true;
            _freeze = freeze;
            foreach (var device in _devices)
            {
                device.CutPower(freeze);
            }
        }
    }

    /// <summary><see cref="PowerLossDevice.ReleaseDiscarding"/> on every device, and on those wrapped from now on.</summary>
    public void ReleaseDiscarding()
    {
        PowerLossDevice[] devices;
        lock (_lock)
        {
            _released = true;
            devices = [.. _devices];
        }

        foreach (var device in devices)
        {
            device.ReleaseDiscarding();
        }
    }

    /// <summary>Applies <see cref="PowerLossDevice.ApplyLossAsync"/> to every device; returns the sectors changed in all.</summary>
    public async Task<int> ApplyLossAsync(Random rng, TimeSpan timeout)
    {
        PowerLossDevice[] devices;
        lock (_lock)
        {
            devices = [.. _devices];
        }

        var changed = 0;
        foreach (var device in devices)
        {
            changed += await device.ApplyLossAsync(rng, timeout);
        }

        return changed;
    }
}
