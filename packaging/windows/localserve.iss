; Inno Setup script for the Windows build. Build the one-folder app first, on Windows:
;   pip install -e .[package] && python packaging/make_icons.py && pyinstaller packaging/localserve.spec
; then: iscc /DAppVersion=0.1.0 packaging\windows\localserve.iss  ->  dist\localserve-setup-0.1.0.exe
; Per-user install (no admin rights), like the app itself: everything lives under the user.

#ifndef AppVersion
  #define AppVersion "0.1.0"
#endif

[Setup]
AppId={{6F1D2C3A-5B4E-4F7A-9C1D-2E3F4A5B6C7D}
AppName=localserve
AppVersion={#AppVersion}
AppPublisher=localserve developers
DefaultDirName={localappdata}\Programs\localserve
DefaultGroupName=localserve
DisableProgramGroupPage=yes
PrivilegesRequired=lowest
OutputDir=..\..\dist
OutputBaseFilename=localserve-setup-{#AppVersion}
SetupIconFile=..\..\build\icons\localserve.ico
UninstallDisplayIcon={app}\localserve.exe
Compression=lzma2
SolidCompression=yes
ArchitecturesInstallIn64BitMode=x64compatible

[Files]
Source: "..\..\dist\localserve\*"; DestDir: "{app}"; Flags: recursesubdirs createallsubdirs ignoreversion

[Icons]
Name: "{userprograms}\localserve"; Filename: "{app}\localserve.exe"; Parameters: "tray"

[Tasks]
; Off by default: starting at login is the user's choice (also in the app's Settings).
Name: "startatlogin"; Description: "Start localserve when I log in"; Flags: unchecked

[Registry]
; The same value the app's Settings and `localserve autostart on` write; removed on uninstall.
Root: HKCU; Subkey: "Software\Microsoft\Windows\CurrentVersion\Run"; ValueType: string; \
  ValueName: "localserve"; ValueData: """{app}\localserve.exe"" tray"; \
  Tasks: startatlogin; Flags: uninsdeletevalue

[Run]
Filename: "{app}\localserve.exe"; Parameters: "tray"; Description: "Start localserve"; \
  Flags: nowait postinstall skipifsilent

[UninstallRun]
; Stop a running daemon so its files can be removed.
Filename: "{app}\localserve.exe"; Parameters: "stop"; Flags: runhidden; RunOnceId: "StopDaemon"
