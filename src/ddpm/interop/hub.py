"""A model from the Hugging Face Hub, fetched with huggingface_hub's own ``hf_hub_download`` into its
own cache (``HF_HOME``, or ``cache_dir``): only the files an import reads, never the whole repository.

The pipeline layout is tried first (``model_index.json``, then the UNet's and the scheduler's
sub-folders it names), then the flat one (``config.json`` and ``scheduler_config.json`` at the top);
of the weights, the safetensors file where the repository has one, else the ``.bin``. Every file
comes from the one commit the revision resolves to, which is returned with the folder.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import ConfigError, first_line
from .source import WEIGHTS, component, read_json, scheduler_component

HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def is_hub_id(text: str) -> bool:
    return bool(HUB_ID.match(text)) and ".." not in text


def download(repo_id: str, revision: str | None = None, *, cache_dir: str | Path | None = None,
             endpoint: str | None = None) -> tuple[Path, str]:
    """The local snapshot folder of ``repo_id`` at ``revision`` (None: main) holding the files an import
    needs, and the commit it came from. ``endpoint``: the Hub's address (None: huggingface_hub's own
    setting, HF_ENDPOINT or huggingface.co). One sentence for an unknown id, revision or file, and
    for a Hub that cannot be reached when the files are not already cached."""
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub import errors
        from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError,
                                            RevisionNotFoundError)
    except ImportError:
        raise ConfigError('downloading from the Hub needs huggingface_hub; install it with pip install '
                          '"torch-ddpm[diffusers]"') from None
    # a file the repository lacks (older huggingface_hub: EntryNotFoundError, which the local miss also is)
    RemoteMissing = getattr(errors, "RemoteEntryNotFoundError", errors.EntryNotFoundError)
    where = f"{repo_id}" + (f" at revision {revision}" if revision else "")

    def get(name: str) -> Path | None:
        try:
            return Path(hf_hub_download(repo_id, name, revision=revision, cache_dir=cache_dir, endpoint=endpoint))
        except LocalEntryNotFoundError:  # first: it is also an EntryNotFoundError
            raise ConfigError(f"could not download {where} from the Hub (no connection, or offline mode) and it is "
                              "not in the local cache; connect to the network, or import a local folder") from None
        except RemoteMissing:
            return None
        except GatedRepoError:
            raise ConfigError(f"{repo_id} is a gated repository on the Hub; accept its terms on its page and log in "
                              "with hf auth login first") from None
        except RepositoryNotFoundError:
            raise ConfigError(f"there is no model {repo_id!r} on the Hub (or it is private: log in with hf auth login); "
                              "give an id such as google/ddpm-cifar10-32 or a local folder") from None
        except RevisionNotFoundError:
            raise ConfigError(f"{repo_id} has no revision {revision!r}; give a branch, tag or commit it has") from None
        except HfHubHTTPError as err:
            raise ConfigError(f"the Hub refused {where} ({first_line(err, 200)})") from None
        except OSError as err:  # a connection refused before huggingface_hub could turn it into its own error
            raise ConfigError(f"could not download {where} from the Hub ({err.strerror or err})") from None

    index_path = get("model_index.json")
    if index_path is not None:
        root = index_path.parent
        index = read_json(index_path)
        unet = component(index, ("UNet2DModel",)) or "unet"
        scheduler = scheduler_component(index) or "scheduler"
        unet_config = get(f"{unet}/config.json")
        get(f"{scheduler}/scheduler_config.json")
        prefix = f"{unet}/"
    else:
        unet_config = get("config.json")
        if unet_config is None:
            raise ConfigError(f"{where} on the Hub holds no UNet: it has neither model_index.json nor config.json")
        root = unet_config.parent
        get("scheduler_config.json")
        prefix = ""
    if unet_config is not None:
        if not any(get(prefix + name) is not None for name in WEIGHTS):
            raise ConfigError(f"{where} on the Hub has a UNet config but no weights ({prefix}{WEIGHTS[0]} or {WEIGHTS[1]})")
    return root, root.name
