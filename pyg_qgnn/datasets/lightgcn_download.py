r"""Downloads of the LightGCN benchmark splits (Gowalla, Yelp2018,
Amazon-Book) from the LightGCN reference repository, where PyG's
:class:`~torch_geometric.datasets.AmazonBook` also fetches its raw files.

Files go to :obj:`$PYG_QGNN_CACHE/download/recsys/<name>/` (default
:obj:`~/.cache/pyg_qgnn`) through PyG's :func:`download_url`; a folder
appears there only once all of its files have arrived, so an interrupted
download is never read as data.
"""
import contextlib
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Optional

from torch_geometric.data import download_url

from pyg_qgnn.datasets.locate import cache_root, download_timeout

URL = ('https://raw.githubusercontent.com/gusye1234/LightGCN-PyTorch/master/'
       'data/{name}')
#: Dataset names the reference repository ships in the text format.
DOWNLOADABLE = ('gowalla', 'yelp2018', 'amazon-book')
REQUIRED = ('train.txt', 'test.txt')
#: Fix the numbers of users and items where present (see the loader).
OPTIONAL = ('user_list.txt', 'item_list.txt')


def download_folder(name: str) -> Path:
    r"""Where :func:`download_lightgcn` puts dataset :obj:`name`."""
    return cache_root() / 'download' / 'recsys' / name


def download_lightgcn(name: str, log: Callable[[str], None] = print
                      ) -> Optional[Path]:
    r"""The folder of dataset :obj:`name` (one of :data:`DOWNLOADABLE`)
    after downloading it if needed (announced through :obj:`log`);
    :obj:`None` for other names. Network errors propagate (offline, fast:
    a 15-second socket timeout)."""
    if name.lower() not in DOWNLOADABLE:
        return None
    name = name.lower()
    target = download_folder(name)
    if all((target / f).is_file() for f in REQUIRED):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    url = URL.format(name=name)
    log(f'[pyg_qgnn] downloading {name} from {url} to {target}')
    partial = Path(tempfile.mkdtemp(prefix=f'.{name}-', dir=target.parent))
    try:
        with download_timeout():
            for file in REQUIRED:
                download_url(f'{url}/{file}', str(partial), log=False)
            for file in OPTIONAL:  # without them, counts come from the ids
                with contextlib.suppress(OSError):  # HTTPError included
                    download_url(f'{url}/{file}', str(partial), log=False)
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target
