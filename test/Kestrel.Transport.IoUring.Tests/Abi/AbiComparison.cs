using System.Globalization;
using System.Text;

namespace Kestrel.Transport.IoUring.Tests.Abi;

/// <summary>The outcome of comparing the C# mirrors with the C side: every disagreement, and what was checked.</summary>
internal sealed class AbiComparison
{
    public List<string> Mismatches { get; } = [];

    public int Structs { get; private set; }

    public int Fields { get; private set; }

    public int Constants { get; private set; }

    /// <summary>Names checked against <see cref="UpstreamUapi"/> because the headers are too old to have them.</summary>
    public List<string> CheckedUpstreamOnly { get; } = [];

    public static AbiComparison Run(CAbiReport c, IReadOnlyList<ManagedStruct> structs, IReadOnlyList<ManagedConstant> constants)
    {
        var result = new AbiComparison();
        foreach (ManagedStruct s in structs)
        {
            result.CompareStruct(c, s);
        }

        foreach (ManagedConstant k in constants)
        {
            result.CompareConstant(c, k);
        }

        foreach (string unsupported in ManagedAbi.UnsupportedConstants)
        {
            result.Mismatches.Add($"{unsupported}: not an integer constant, so it cannot be checked against C; make it const (or static readonly) of an integer type");
        }

        return result;
    }

    private void CompareStruct(CAbiReport c, ManagedStruct s)
    {
        Structs++;
        if (!c.StructSizes.TryGetValue(s.Name, out int cSize))
        {
            Mismatches.Add($"struct {s.Name}: the C program printed no size");
        }
        else if (cSize != s.Size)
        {
            Mismatches.Add($"struct {s.Name}: sizeof C# {s.Size}, C {cSize}");
        }

        if (s.ContainsReferences || s.MarshalSize != s.Size)
        {
            Mismatches.Add($"struct {s.Name}: not blittable (contains references: {s.ContainsReferences}, marshalled size {s.MarshalSize}, runtime size {s.Size}); offsets below may not be the runtime's");
        }

        foreach (ManagedField f in s.Fields)
        {
            Fields++;
            string name = $"{s.Name}.{f.Name}";
            UpstreamField? upstream = UpstreamUapi.FindField(s.Name, f.Name);
            if (upstream is not null)
            {
                Expect(name, "offset", f.Offset, upstream.Offset, $"upstream {upstream.Version} '{upstream.HeaderName}'");
                Expect(name, "size", f.Size, upstream.Size, $"upstream {upstream.Version} '{upstream.HeaderName}'");
            }

            if (!c.Fields.TryGetValue((s.Name, f.Name), out CField? cf))
            {
                if (upstream is null)
                {
                    Mismatches.Add($"{name}: the C program printed nothing for it");
                }
                else
                {
                    CheckedUpstreamOnly.Add($"{name} ({upstream.HeaderName}, {upstream.Version})");
                }

                continue;
            }

            string source = cf.HeaderName == f.Name ? "C" : $"C '{cf.HeaderName}'";
            Expect(name, "offset", f.Offset, cf.Offset, source);
            Expect(name, "size", f.Size, cf.Size, source);
            if (f.IsSigned is bool signed && cf.Signedness is 0 or 1 && signed != (cf.Signedness == 1)
                && !UpstreamUapi.SignednessExceptions.ContainsKey(name))
            {
                Mismatches.Add($"{name}: C# is {(signed ? "signed" : "unsigned")}, {source} is {(cf.Signedness == 1 ? "signed" : "unsigned")}");
            }

            if (f.ElementSize is int elementSize)
            {
                if (!c.ElementSizes.TryGetValue((s.Name, f.Name), out int cElement))
                {
                    Mismatches.Add($"{name}: the C program printed no element size");
                }
                else
                {
                    Expect(name, "element size", elementSize, cElement, source);
                }
            }
        }
    }

    private void CompareConstant(CAbiReport c, ManagedConstant k)
    {
        Constants++;
        string name = $"{k.Owner}.{k.Name}";
        UpstreamConstant? upstream = UpstreamUapi.FindConstant(k.Name);
        if (c.Constants.TryGetValue(k.Name, out Int128 cValue))
        {
            if (!ManagedAbi.SameBits(cValue, k.Value, k.Bits))
            {
                Mismatches.Add($"{name}: C# {Show(k.Value)} ({k.TypeName}), C {Show(cValue)}");
            }

            if (upstream is not null && !ManagedAbi.SameBits(cValue, upstream.Value, 64))
            {
                Mismatches.Add($"UpstreamUapi row {k.Name}: table {Show(upstream.Value)}, headers {c.HeadersVersion} {Show(cValue)}; fix the table");
            }

            return;
        }

        if (upstream is null)
        {
            Mismatches.Add($"{name}: the C program printed nothing for it");
            return;
        }

        CheckedUpstreamOnly.Add($"{k.Name} ({upstream.Version})");
        if (!ManagedAbi.SameBits(upstream.Value, k.Value, k.Bits))
        {
            Mismatches.Add($"{name}: C# {Show(k.Value)} ({k.TypeName}), upstream {upstream.Version} {Show(upstream.Value)}");
        }
    }

    private void Expect(string name, string what, int managed, int native, string source)
    {
        if (managed != native)
        {
            Mismatches.Add($"{name}: {what} C# {managed}, {source} {native}");
        }
    }

    private static string Show(Int128 value)
        => value < 0 ? value.ToString(CultureInfo.InvariantCulture) : $"{value.ToString(CultureInfo.InvariantCulture)} (0x{value:x})";

    public string Summary(CAbiReport c)
    {
        var text = new StringBuilder();
        text.Append(CultureInfo.InvariantCulture, $"Headers {c.HeadersVersion}: checked {Structs} structs, {Fields} fields, {Constants} constants; ");
        if (CheckedUpstreamOnly.Count == 0)
        {
            text.Append("none newer than the headers.");
        }
        else
        {
            text.Append(CultureInfo.InvariantCulture, $"{CheckedUpstreamOnly.Count} newer than the headers, checked against upstream uapi values: ");
            text.AppendJoin(", ", CheckedUpstreamOnly);
        }
        return text.ToString();
    }
}
