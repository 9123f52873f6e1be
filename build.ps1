<#
.SYNOPSIS
    Portable single-file Windows build of DICOM PACS Migrator: dist\DICOMPACSMigrator.exe.

.DESCRIPTION
    1. Finds Python 3.8.10 (64-bit): -Python, else an installed one (registry), else installs it
       for the current user without admin rights; if the installer cannot run, falls back to the
       embeddable zip in build\python-3.8.10-embed.
    2. Creates a clean environment (.venvs\build-legacy, recreated every run) and installs the
       exact pins of requirements\legacy.txt + requirements\build.txt, wheels only.
    3. Runs PyInstaller on dicom_migrator.spec: one windowed exe with assets\app.ico, bundling
       the Universal C Runtime from the Windows 10 SDK so it runs on Server 2008 R2 without it.
    4. Runs the exe's --self-test, prints its report and the exe's size.
    Stops at the first error. Written for Windows PowerShell 2.0 and later.

    Run from a PowerShell console (not the ISE), in the repository folder:
        powershell -ExecutionPolicy Bypass -File .\build.ps1

.PARAMETER Python
    Path to a python.exe of Python 3.8.10 (64-bit) to build with, instead of searching.

.PARAMETER AllowMissingUcrt
    Build even when the Universal C Runtime cannot be bundled (no Windows 10 SDK on this
    machine). The exe then needs KB3118401 (or KB2999226) on Windows 7 / Server 2008 R2.

.PARAMETER SizeBudgetMB
    Fail when the exe is larger than this many MB (1,000,000 bytes). Default 35.
#>
param(
    [string]$Python = "",
    [switch]$AllowMissingUcrt,
    [int]$SizeBudgetMB = 35
)

Set-StrictMode -Version 2.0
$ErrorActionPreference = "Stop"

$PyVersion = "3.8.10"
$PyInstallerUrl = "https://www.python.org/ftp/python/3.8.10/python-3.8.10-amd64.exe"
$PyInstallerMd5 = "62cf1a12a5276b0259e8761d4cf4fe42"   # as published on python.org for 3.8.10
$PyEmbedUrl = "https://www.python.org/ftp/python/3.8.10/python-3.8.10-embed-amd64.zip"
$PyEmbedMd5 = "3acb1d7d9bde5a79f840167b166bb633"
$PipVersion = "25.0.1"                                   # the last pip line supporting Python 3.8
$PipSha256 = "c46efd13b6aa8279f33f2864459c8ce587ea6a1a59ee20de055868d8f7688f7f"
$AppName = "DICOMPACSMigrator"

$Root = Split-Path -Parent $MyInvocation.MyCommand.Definition
$BuildDir = Join-Path $Root "build"
$DownloadDir = Join-Path $BuildDir "downloads"
$DistDir = Join-Path $Root "dist"
$VenvDir = Join-Path (Join-Path $Root ".venvs") "build-legacy"
$EmbedBase = Join-Path $BuildDir "python-$PyVersion-embed"
$EmbedEnv = Join-Path $BuildDir "python-$PyVersion-embed-env"
$Exe = Join-Path $DistDir "$AppName.exe"

function Fail([string]$Message) {
    Write-Host ""
    Write-Host "BUILD FAILED: $Message" -ForegroundColor Red
    exit 1
}

# Any error a cmdlet or .NET call throws (ErrorActionPreference Stop) ends the build here.
trap {
    Write-Host ""
    Write-Host "BUILD FAILED: $_" -ForegroundColor Red
    exit 1
}

function Step([string]$Text) {
    Write-Host ""
    Write-Host "==> $Text" -ForegroundColor Cyan
}

# Runs a program and fails the build when it exits non-zero. Native programs' stderr goes
# straight to the console: under "Stop", PowerShell would turn pip's warnings into errors.
function Invoke-Checked([string]$What, [string]$Program, [string[]]$Arguments) {
    Write-Host "> $Program $($Arguments -join ' ')"
    $saved = $ErrorActionPreference
    $ErrorActionPreference = "Continue"
    try {
        # Out-Host: a function's stray output would become part of its return value.
        & $Program @Arguments | Out-Host
        $code = $LASTEXITCODE
    } finally {
        $ErrorActionPreference = $saved
    }
    if ($code -ne 0) { Fail "$What failed (exit code $code)" }
}

# "3.8.10 64" for a usable interpreter, "" when it cannot be run.
function Get-PythonVersion([string]$Candidate) {
    if (-not $Candidate -or -not (Test-Path $Candidate -PathType Leaf)) { return "" }
    $saved = $ErrorActionPreference
    $ErrorActionPreference = "Continue"
    try {
        $code = "import sys, struct; v = sys.version_info; " +
                "print('%d.%d.%d %d' % (v[0], v[1], v[2], struct.calcsize('P') * 8))"
        $out = & $Candidate -c $code 2>$null
        if ($LASTEXITCODE -ne 0) { return "" }
        return ("$out").Trim()
    } catch {
        return ""
    } finally {
        $ErrorActionPreference = $saved
    }
}

function Test-RightPython([string]$Candidate) {
    return ((Get-PythonVersion $Candidate) -eq "$PyVersion 64")
}

function Get-FileDigest([string]$Path, [string]$Algorithm) {
    $hasher = [System.Security.Cryptography.HashAlgorithm]::Create($Algorithm)
    $stream = [System.IO.File]::OpenRead($Path)
    try { $bytes = $hasher.ComputeHash($stream) } finally { $stream.Close() }
    return ([System.BitConverter]::ToString($bytes) -replace "-", "").ToLower()
}

function Enable-Tls12 {
    # python.org and PyPI accept TLS 1.2 only; PowerShell 2.0 on .NET 3.5 starts with TLS 1.0.
    # 3072 = Tls12 (needs .NET 4.5, or .NET 3.5 SP1 with KB3154518 on 2008 R2).
    try {
        $current = [int][Net.ServicePointManager]::SecurityProtocol
        [Net.ServicePointManager]::SecurityProtocol = [Net.SecurityProtocolType]($current -bor 3072)
    } catch {
        Write-Warning "Could not enable TLS 1.2 ($_); downloads may fail on this machine."
    }
}

# Downloads $Url to $Target unless a verified copy is already there.
function Get-VerifiedFile([string]$Url, [string]$Target, [string]$Algorithm, [string]$Digest) {
    if ((Test-Path $Target) -and ((Get-FileDigest $Target $Algorithm) -eq $Digest)) { return }
    New-Item -ItemType Directory -Force -Path (Split-Path -Parent $Target) | Out-Null
    Enable-Tls12
    Write-Host "Downloading $Url"
    $part = "$Target.part"
    (New-Object System.Net.WebClient).DownloadFile($Url, $part)
    $actual = Get-FileDigest $part $Algorithm
    if ($actual -ne $Digest) {
        Remove-Item $part -Force
        Fail "$Url has $Algorithm $actual, expected ${Digest}: not using it."
    }
    if (Test-Path $Target) { Remove-Item $Target -Force }
    Move-Item $part $Target
}

function Expand-ZipFile([string]$Zip, [string]$Destination) {
    New-Item -ItemType Directory -Force -Path $Destination | Out-Null
    $haveZipFile = $true
    try { Add-Type -AssemblyName System.IO.Compression.FileSystem } catch { $haveZipFile = $false }
    if ($haveZipFile) {
        [System.IO.Compression.ZipFile]::ExtractToDirectory($Zip, $Destination)
        return
    }
    # PowerShell 2.0 runs on .NET 2.0/3.5, which has no ZipFile: use the Explorer shell.
    # 4 no progress window + 16 yes to all + 512 no folder prompt + 1024 no error dialogs.
    $shell = New-Object -ComObject Shell.Application
    $shell.NameSpace($Destination).CopyHere($shell.NameSpace($Zip).Items(), 1556)
    # CopyHere may return before the copy is done.
    for ($i = 0; $i -lt 120 -and -not (Test-Path (Join-Path $Destination "python38.zip")); $i++) {
        Start-Sleep -Milliseconds 500
    }
}

# --- 1. Python 3.8.10 -----------------------------------------------------------------------
function Find-InstalledPython {
    $keys = @("HKCU:\Software\Python\PythonCore\3.8\InstallPath",
              "HKLM:\Software\Python\PythonCore\3.8\InstallPath")
    foreach ($key in $keys) {
        if (-not (Test-Path $key)) { continue }
        $item = Get-ItemProperty $key
        $candidates = @()
        if ($item.PSObject.Properties["ExecutablePath"]) { $candidates += $item.ExecutablePath }
        if ($item.PSObject.Properties["(default)"]) {
            $candidates += (Join-Path $item."(default)" "python.exe")
        }
        foreach ($candidate in $candidates) {
            if (Test-RightPython $candidate) { return $candidate }
        }
    }
    return ""
}

function Install-PythonForUser {
    $installer = Join-Path $DownloadDir "python-$PyVersion-amd64.exe"
    Get-VerifiedFile $PyInstallerUrl $installer "MD5" $PyInstallerMd5
    $log = Join-Path $BuildDir "python-install.log"
    # Per-user install: no admin rights, no PATH or file-type changes, no py launcher.
    $arguments = "/quiet InstallAllUsers=0 Include_launcher=0 InstallLauncherAllUsers=0 " +
                 "Include_test=0 Include_doc=0 Include_tcltk=1 Include_pip=1 Shortcuts=0 " +
                 "AssociateFiles=0 PrependPath=0 CompileAll=0 /log `"$log`""
    Write-Host "> $installer $arguments"
    $process = Start-Process -FilePath $installer -ArgumentList $arguments -Wait -PassThru
    if ($process.ExitCode -ne 0) {
        Write-Warning "The Python installer exited with code $($process.ExitCode) (log: $log)."
        return ""
    }
    return (Find-InstalledPython)
}

function Install-EmbeddedPython {
    if (-not (Test-RightPython (Join-Path $EmbedBase "python.exe"))) {
        $zip = Join-Path $DownloadDir "python-$PyVersion-embed-amd64.zip"
        Get-VerifiedFile $PyEmbedUrl $zip "MD5" $PyEmbedMd5
        if (Test-Path $EmbedBase) { Remove-Item $EmbedBase -Recurse -Force }
        Expand-ZipFile $zip $EmbedBase
        # The embeddable Python ignores site-packages until "import site" is enabled.
        $pth = Join-Path $EmbedBase "python38._pth"
        $lines = Get-Content $pth | ForEach-Object { $_ -replace "^#\s*import site", "import site" }
        Set-Content -Path $pth -Value $lines -Encoding ASCII
    }
    $python = Join-Path $EmbedBase "python.exe"
    if (-not (Test-RightPython $python)) { Fail "the embeddable Python in $EmbedBase does not run." }
    # It has no pip: run pip from its (hash-checked) wheel to install itself.
    $saved = $ErrorActionPreference
    $ErrorActionPreference = "Continue"
    & $python -c "import pip" 2>$null
    $havePip = ($LASTEXITCODE -eq 0)
    $ErrorActionPreference = $saved
    if (-not $havePip) {
        Enable-Tls12
        $json = (New-Object System.Net.WebClient).DownloadString("https://pypi.org/pypi/pip/$PipVersion/json")
        $match = [regex]::Match($json, "https://files\.pythonhosted\.org/[^`"]*/pip-$PipVersion-py3-none-any\.whl")
        if (-not $match.Success) { Fail "could not find the pip $PipVersion wheel on PyPI." }
        $wheel = Join-Path $DownloadDir "pip-$PipVersion-py3-none-any.whl"
        Get-VerifiedFile $match.Value $wheel "SHA256" $PipSha256
        Invoke-Checked "installing pip into the embeddable Python" $python @(
            (Join-Path $wheel "pip"), "install", "--no-index", "--no-warn-script-location", $wheel)
    }
    # Tkinter is not part of the embeddable distribution, and the wizard cannot run without it.
    $ErrorActionPreference = "Continue"
    & $python -c "import tkinter; tkinter.Tcl()" 2>$null
    $haveTk = ($LASTEXITCODE -eq 0)
    $ErrorActionPreference = $saved
    if (-not $haveTk) {
        Fail ("the embeddable Python has no Tkinter, so the exe would have no window. Copy " +
              "these from any Python $PyVersion (64-bit) installation into ${EmbedBase}: " +
              "DLLs\_tkinter.pyd, DLLs\tcl86t.dll, DLLs\tk86t.dll (next to python.exe), the " +
              "folder Lib\tkinter (as tkinter\) and the folder tcl\, then run build.ps1 again. " +
              "Or pass -Python with the path of such an installation's python.exe.")
    }
    return $python
}

function Get-BuildPython {
    if ($Python) {
        if (-not (Test-RightPython $Python)) {
            Fail "-Python $Python is not Python $PyVersion 64-bit (it says '$(Get-PythonVersion $Python)')."
        }
        return @($Python, "venv")
    }
    $found = Find-InstalledPython
    if ($found) { return @($found, "venv") }
    Step "Python $PyVersion not found: installing it for the current user (no admin rights needed)"
    $found = Install-PythonForUser
    if ($found) { return @($found, "venv") }
    Step "Falling back to the embeddable Python $PyVersion in $EmbedBase"
    return @((Install-EmbeddedPython), "embed")
}

# --- 2. clean build environment ---------------------------------------------------------------
function New-BuildEnvironment([string]$BasePython, [string]$Kind) {
    if ($Kind -eq "venv") {
        if (Test-Path $VenvDir) { Remove-Item $VenvDir -Recurse -Force }
        Invoke-Checked "creating the virtual environment" $BasePython @("-m", "venv", $VenvDir)
        $envPython = Join-Path (Join-Path $VenvDir "Scripts") "python.exe"
    } else {
        # No venv module in the embeddable Python: a fresh copy of it is the clean environment.
        if (Test-Path $EmbedEnv) { Remove-Item $EmbedEnv -Recurse -Force }
        Copy-Item $EmbedBase $EmbedEnv -Recurse
        $envPython = Join-Path $EmbedEnv "python.exe"
    }
    Invoke-Checked "installing pip $PipVersion" $envPython @(
        "-m", "pip", "install", "--disable-pip-version-check", "--no-warn-script-location",
        "pip==$PipVersion")
    # Wheels only: no compiler here, and a source build would hide a missing Python 3.8 wheel.
    Invoke-Checked "installing the pinned packages" $envPython @(
        "-m", "pip", "install", "--disable-pip-version-check", "--no-warn-script-location",
        "--only-binary=:all:",
        "-r", (Join-Path $Root "requirements\legacy.txt"),
        "-r", (Join-Path $Root "requirements\build.txt"))
    return $envPython
}

# --- 3. Universal C Runtime -----------------------------------------------------------------
# Python 3.8 needs the UCRT, which Windows 7 / Server 2008 R2 only have with KB3118401 (or
# KB2999226). PyInstaller bundles it when it can find the DLLs: put the SDK's copy on PATH.
function Find-UcrtRedist {
    $programFiles = ${env:ProgramFiles(x86)}
    if (-not $programFiles) { $programFiles = $env:ProgramFiles }
    $redist = Join-Path $programFiles "Windows Kits\10\Redist"
    if (-not (Test-Path $redist)) { return "" }
    $candidates = @(Join-Path $redist "ucrt\DLLs\x64")
    $versioned = Get-ChildItem $redist | Where-Object { $_.PSIsContainer -and $_.Name -match "^10\." } |
        Sort-Object Name -Descending
    foreach ($dir in $versioned) { $candidates += (Join-Path $dir.FullName "ucrt\DLLs\x64") }
    foreach ($dir in $candidates) {
        if (Test-Path (Join-Path $dir "ucrtbase.dll")) { return $dir }
    }
    return ""
}

# --- main -----------------------------------------------------------------------------------
$started = Get-Date
Set-Location $Root
foreach ($name in @("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")) {
    if (Test-Path "Env:$name") { Remove-Item "Env:$name" }
}
$env:PYTHONNOUSERSITE = "1"   # nothing from the user's own site-packages may leak into the exe
$env:PIP_CONSTRAINT = ""

Step "Python $PyVersion"
$basePython, $kind = Get-BuildPython
Write-Host "Using $basePython ($kind)"

Step "Clean build environment with requirements\legacy.txt + requirements\build.txt"
$envPython = New-BuildEnvironment $basePython $kind

Step "Universal C Runtime"
$ucrt = Find-UcrtRedist
if ($ucrt) {
    Write-Host "Bundling the UCRT from $ucrt"
    $env:PATH = "$ucrt;$env:PATH"
} elseif ($AllowMissingUcrt) {
    Write-Warning "No Windows 10 SDK UCRT found: the exe will need KB3118401 on Server 2008 R2."
} else {
    Fail ("the Universal C Runtime redistributable was not found (Windows 10 SDK, folder " +
          "Windows Kits\10\Redist\...\ucrt\DLLs\x64). Install the Windows 10 SDK, or pass " +
          "-AllowMissingUcrt if every target has KB3118401.")
}

Step "PyInstaller: dicom_migrator.spec"
if (Test-Path $Exe) { Remove-Item $Exe -Force }
Invoke-Checked "PyInstaller" $envPython @(
    "-m", "PyInstaller", "--noconfirm", "--clean", "--log-level", "WARN",
    "--distpath", $DistDir, "--workpath", $BuildDir, (Join-Path $Root "dicom_migrator.spec"))
if (-not (Test-Path $Exe)) { Fail "PyInstaller did not produce $Exe." }
if ($ucrt) {
    $check = "import sys; from PyInstaller.archive.readers import CArchiveReader; " +
             "sys.exit(0 if 'ucrtbase.dll' in CArchiveReader(sys.argv[1]).toc else 3)"
    Invoke-Checked "checking that the UCRT is inside the exe" $envPython @("-c", $check, $Exe)
}

Step "Self-test of the built exe"
# The exe is windowed: it has no console, so the report comes back through a file.
$report = Join-Path $DistDir "selftest.txt"
if (Test-Path $report) { Remove-Item $report -Force }
$startInfo = New-Object System.Diagnostics.ProcessStartInfo
$startInfo.FileName = $Exe
$startInfo.Arguments = "--self-test"
$startInfo.UseShellExecute = $false
$startInfo.EnvironmentVariables["DICOM_MIGRATOR_SELFTEST_REPORT"] = $report
$process = [System.Diagnostics.Process]::Start($startInfo)
if (-not $process.WaitForExit(300000)) {
    $process.Kill()
    Fail "the self-test did not finish within 5 minutes."
}
$selfTestCode = $process.ExitCode
if (Test-Path $report) {
    Get-Content $report -Encoding UTF8 | ForEach-Object { Write-Host $_ }
} else {
    Write-Host "(the self-test wrote no report to $report)"
}
if ($selfTestCode -ne 0) { Fail "the built exe's self-test failed (exit code $selfTestCode)." }

Step "Summary"
$size = (Get-Item $Exe).Length
$seconds = [int]((Get-Date) - $started).TotalSeconds
Write-Host ("{0}: {1:N1} MB ({2} bytes; budget {3} MB), built in {4} s, self-test passed." -f
            $Exe, ($size / 1000000), $size, $SizeBudgetMB, $seconds)
if ($size -gt ($SizeBudgetMB * 1000000)) { Fail "the exe is over the $SizeBudgetMB MB budget." }
exit 0
